"""params.yaml validation: bad values are refused before any compute, naming the key."""

from pathlib import Path

import pytest

from components.errors import UserError
from flows.params import load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_committed_params_file_is_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.task == "dna" and p.method == "recraft"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"align": {"lambda_fa": -1.0}}, "align.lambda_fa"),
        ({"align": {"lambda_fld": "big"}}, "align.lambda_fld"),
        ({"align": {"lamda_fa": 1.0}}, "align.lamda_fa: unknown key"),
        ({"fit": {"epochs": 0}}, "fit.epochs"),
        ({"align": {"schedule": "both"}}, "align.schedule"),
        ({"align": {"fld_variant": "kl"}}, "align.fld_variant"),
        ({"prepare": {"val_fraction": 0.9}}, "prepare.val_fraction"),
        ({"source": {"epochs": 2, "hinge_epochs": 3}}, "hinge_epochs=3 exceeds"),
        ({"method": "magic"}, "method"),
        ({"seed": -1}, "seed"),
        ({"extra_section": {}}, "extra_section: unknown key"),
        ({"align": [1, 2]}, "align"),
    ],
)
def test_bad_values_name_the_key(raw, fragment):
    with pytest.raises(UserError) as err:
        parse_params(raw)
    assert fragment in str(err.value)


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("task: dna\nalign:\n  lambda_fa: [1,\n")
    with pytest.raises(UserError, match=r"params.yaml is not valid YAML at line"):
        load_params(bad)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_validated(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("task: dna\n")
    p = load_params(f, ["align.lambda_fld=0.25", "fit.freeze_embedder=true", "model.n_layers=2"])
    assert p.align.lambda_fld == 0.25 and p.fit.freeze_embedder is True and p.model.n_layers == 2
    with pytest.raises(UserError, match="align.eps"):
        load_params(f, ["align.eps=-3"])
    with pytest.raises(UserError, match="not of the form"):
        load_params(f, ["align.eps"])


def test_params_are_frozen():
    p = parse_params({})
    with pytest.raises(Exception, match="frozen"):
        p.align.lambda_fa = 3.0
