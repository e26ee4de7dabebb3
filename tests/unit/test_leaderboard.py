"""The benchmark's table maths, checked against hand computations."""

import math

import pytest

from components.leaderboard import (
    average_ranks,
    bootstrap_interval,
    cells,
    collapse_counts,
    geometric_mean,
    holm,
    paired_differences,
    ratios_to,
    sign_flip_test,
    spearman,
    to_error,
)


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


def test_pairing_is_by_seed_and_ignores_unpaired_seeds():
    rows = [
        {"task": "a", "method": "recraft", "seed": 2, "error": 0.25},
        {"task": "a", "method": "recraft", "seed": 0, "error": 0.5},
        {"task": "a", "method": "recraft", "seed": 5, "error": 0.125},  # nft has no seed 5
        {"task": "a", "method": "nft", "seed": 0, "error": 0.75},
        {"task": "a", "method": "nft", "seed": 2, "error": 0.125},
        {"task": "a", "method": "nft", "seed": 3, "error": 0.5},  # recraft has no seed 3
        {"task": "b", "method": "nft", "seed": 0, "error": 0.0},  # another task
        {"task": "a", "method": "orca", "seed": 0, "error": 0.0},  # another method
    ]
    assert paired_differences(rows, "recraft", "nft", "a") == [-0.25, 0.125]  # seeds 0, 2
    assert paired_differences(rows, "nft", "recraft", "a") == [0.25, -0.125]
    assert paired_differences(rows, "recraft", "nft", "b") == []
    with pytest.raises(ValueError, match="seed 0"):
        paired_differences([*rows, rows[1]], "recraft", "nft", "a")


@pytest.mark.parametrize(
    ("diffs", "p"),
    [
        ([1, 1, 1], 2 / 8),  # only all-plus and all-minus reach |mean| = 1
        ([1, 1, 1, 1, 1, 1], 2 / 64),
        ([-0.5, -0.5, -0.5, -0.5, -0.5, -0.5], 2 / 64),
        # sums of +-3 +-1 +-1: 5, 3, 3, 1, -1, -3, -3, -5; |sum| >= 3 in 6 of 8
        ([3, 1, -1], 6 / 8),
        # +-2 +-2 in {4, 0, 0, -4}, +-1 +-1 in {2, 0, 0, -2}: |sum| >= 4 in 6 of 16
        ([2, 2, 1, -1], 6 / 16),
        # 1.2, 0.6, 0.6, 0, 0, -0.6, -0.6, -1.2: the ties at 0.6 differ in the last bit without the tolerance
        ([0.6, -0.3, 0.3], 6 / 8),
        ([0, 0, 0], 1.0),  # zeros are kept as they are: every pattern ties
        ([1, 0, 0], 1.0),
        ([], 1.0),
    ],
)
def test_sign_flip_p_matches_hand_enumeration(diffs, p):
    assert sign_flip_test(diffs) == pytest.approx(p)


def test_sign_flip_samples_above_twenty_differences():
    p = sign_flip_test([1.0] * 25)  # exact p = 2 / 2^25: the estimate is (0 + 1) / (draws + 1)
    assert p == pytest.approx(1 / 100_001)
    mixed = [1.0, -1.0] * 12 + [0.5]
    assert sign_flip_test(mixed) == sign_flip_test(mixed)  # seeded: reproducible
    assert sign_flip_test(mixed) > 0.5


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    diffs = [-0.3, -0.1, -0.2, -0.05, -0.25, -0.15]
    mean, low, high = bootstrap_interval(diffs)
    assert mean == pytest.approx(-0.175)
    assert low < mean < high < 0
    assert bootstrap_interval(diffs) == (mean, low, high)  # deterministic
    _, low4, high4 = bootstrap_interval(diffs * 4)
    assert high4 - low4 < (high - low) * 0.7  # about 1 / sqrt(4) as wide
    _, low90, high90 = bootstrap_interval(diffs, level=0.9)
    assert low <= low90 and high90 <= high


def test_bootstrap_interval_needs_two_values():
    mean, low, high = bootstrap_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in bootstrap_interval([]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1, 2], level=95)


def test_holm_matches_hand_example():
    # sorted: a 0.01 * 3 = 0.03; c 0.03 * 2 = 0.06; b 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert list(adjusted) == ["a", "b", "c"]
    assert holm({"x": 0.4, "y": 0.6}) == pytest.approx({"x": 0.8, "y": 0.8})
    assert holm({"x": 0.7, "y": 0.9}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert holm({"only": 0.2}) == {"only": 0.2} and holm({}) == {}


def test_collapse_counts_per_method():
    rows = [
        {"method": "nft", "collapsed": 1.0},
        {"method": "nft", "collapsed": 0.0},
        {"method": "nft"},  # no flag: not collapsed
        {"method": "scratch", "collapsed": 1.0},
        {"method": "scratch", "collapsed": 1.0},
        {"method": "recraft", "collapsed": math.nan},  # unknown: not counted as a collapse
    ]
    assert collapse_counts(rows) == {
        "nft": {"collapsed": 1, "runs": 3},
        "recraft": {"collapsed": 0, "runs": 1},
        "scratch": {"collapsed": 2, "runs": 2},
    }


def test_benchmark_rows_carry_the_linear_references_and_the_table_shows_them():
    from flows.bench_report import markdown
    from flows.benchmark import result_row, summarise

    def result(task, method, seed, test, ridge=None):
        metric = "nrmse" if ridge is not None else "accuracy"
        out = {"task": task, "method": method, "seed": seed, "metric": metric}
        out |= {f"test/{metric}": test, f"val/{metric}": test, "bound/value": 1.0 + test}
        if ridge is not None:  # depends on the seed's splits, not on the method
            out |= {"reference/ridge/nrmse": ridge, "reference/mean/nrmse": 1.0}
        return out

    results = [
        result("field", m, s, t, ridge=0.2 + 0.1 * s)
        for m, errs in (("nft", (0.15, 0.25)), ("recraft", (0.1, 0.2)))
        for s, t in enumerate(errs)
    ] + [result("cls", m, s, 0.9) for m in ("nft", "recraft") for s in (0, 1)]
    rows = [result_row(r) for r in results]
    assert rows[0]["reference/ridge"] == 0.2 and "reference/ridge" not in rows[-1]
    summary = summarise(rows)
    assert summary["references"] == {"field": {"ridge": pytest.approx(0.25), "mean": 1.0}}
    table = markdown(summary)
    header = next(line for line in table.splitlines() if line.startswith("| task"))
    assert header.endswith("| ridge | mean |")
    field_row = next(line for line in table.splitlines() if line.startswith("| field"))
    assert field_row.endswith("| 0.25 | 1 |")
    assert field_row.startswith("| field (nrmse) | 0.2 ± 0.0707 (1.00) | 0.15 ± 0.0707 (0.75) |"), field_row
    cls_row = next(line for line in table.splitlines() if line.startswith("| cls"))
    assert cls_row.endswith("| – | – |")


def test_the_table_keeps_three_significant_figures_of_tiny_errors():
    """A solved linear field reaches errors near 1e-7: the table shows them, not 0.000."""
    from flows.bench_report import markdown
    from flows.benchmark import result_row, summarise

    results = [
        {"task": "shift", "method": m, "seed": s, "metric": "nrmse", "test/nrmse": e, "val/nrmse": e}
        for m, errs in (("nft", (2.0e-7, 2.2e-7)), ("recraft", (1.9e-7, 1.9e-7)))
        for s, e in enumerate(errs)
    ]
    table = markdown(summarise([result_row(r) for r in results]))
    row = next(line for line in table.splitlines() if line.startswith("| shift"))
    assert "| 2.1e-07 ± 1.41e-08 (1.00) | 1.9e-07 ± 0 (0.90) |" in row, row
    paired = next(line for line in table.splitlines() if line.startswith("| shift | recraft - nft"))
    assert "| 2 | -2e-08 |" in paired, paired
