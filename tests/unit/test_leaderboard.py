"""The benchmark's table maths, checked against hand computations."""

import math

import pytest

from components.leaderboard import average_ranks, cells, geometric_mean, ratios_to, spearman, to_error


def _rows():
    # task a: nft errors 0.5, 0.25 (mean 0.375); recraft 0.125, 0.25; orca 0.375, 0.375 (exact binary fractions)
    # task b: nft 0.5; recraft 0.25; orca 0.5
    data = {
        ("a", "nft"): [0.5, 0.25],
        ("a", "recraft"): [0.125, 0.25],
        ("a", "orca"): [0.375, 0.375],
        ("b", "nft"): [0.5],
        ("b", "recraft"): [0.25],
        ("b", "orca"): [0.5],
    }
    return [
        {"task": t, "method": m, "seed": s, "error": e} for (t, m), errs in data.items() for s, e in enumerate(errs)
    ]


def test_errors_and_cells():
    assert to_error(0.9, True) == pytest.approx(0.1) and to_error(0.3, False) == 0.3
    table = cells(_rows())
    assert table[("a", "nft")]["mean"] == pytest.approx(0.375)
    assert table[("a", "nft")]["std"] == pytest.approx(math.sqrt(2 * 0.125**2))  # ddof=1
    assert table[("b", "nft")] == {"mean": 0.5, "std": 0.0, "n": 1}


def test_ranks_share_ties_and_average_over_tasks():
    ranks = average_ranks(cells(_rows()))
    # task a: recraft 1, nft and orca tie at 0.375 -> 2.5 each; task b likewise.
    assert ranks == {"recraft": 1.0, "nft": 2.5, "orca": 2.5}


def test_ratios_and_geometric_mean():
    ratios = ratios_to(cells(_rows()), "nft")
    assert ratios[("a", "recraft")] == pytest.approx(0.1875 / 0.375) and ratios[("b", "recraft")] == pytest.approx(0.5)
    assert ratios[("a", "nft")] == pytest.approx(1.0)
    assert geometric_mean([0.5, 2.0]) == pytest.approx(1.0)
    assert geometric_mean([0.25, 1.0]) == pytest.approx(0.5)
    zero = cells([{"task": "z", "method": "nft", "error": 0.0}, {"task": "z", "method": "fa", "error": 0.1}])
    assert math.isnan(ratios_to(zero, "nft")[("z", "fa")])
    assert math.isnan(geometric_mean([math.nan]))


def test_spearman_matches_hand_ranks():
    rho, p = spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7.5])
    # ranks y: 1, 2, 3, 5, 4 -> d^2 = 0+0+0+1+1 = 2; rho = 1 - 6*2 / (5*24) = 0.9
    assert rho == pytest.approx(0.9)
    assert 0.0 <= p < 0.1
    assert math.isnan(spearman([1, 2], [2, 1])[0])
