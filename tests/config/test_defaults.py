"""params.yaml and the schema's defaults agree, so `recraft run` without a params file runs the
same pipeline as `dvc repro`."""

from pathlib import Path

import yaml

from flows.params import parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_params_yaml_equals_schema_defaults():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(committed).model_dump() == parse_params({}).model_dump()
