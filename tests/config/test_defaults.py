"""params.yaml and the schema's defaults agree, so `recraft run` without a params file runs the
same pipeline as `dvc repro`."""

from pathlib import Path

import yaml

from flows.params import parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_params_yaml_equals_schema_defaults():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(committed).model_dump() == parse_params({}).model_dump()


def test_params_yaml_is_written_from_the_schema():
    """Each default is written once, in components/config.py; params.yaml is generated from it."""
    from components.config import defaults_yaml

    text = defaults_yaml()
    assert (ROOT / "params.yaml").read_text() == text, "run: python -m components.config > params.yaml"
    assert yaml.safe_load(text)["fit"]["lr"] == 1e-4 and yaml.safe_load(text)["tune"]["fit_lr"] == [3e-5, 3e-4]
