"""params.yaml validation: bad values are refused before any compute, naming the key."""

from pathlib import Path

import pytest
import yaml

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


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"method": "magic"}, "method: unknown method 'magic'; choices: scratch, nft, fa, orca, recraft"),
        ({"source": {"epochs": 2, "hinge_epochs": 3}}, "source.hinge_epochs=3 exceeds source.epochs=2"),
        ({"fit": {"epochs": "many"}}, "fit.epochs: must be a whole number (got 'many')"),
        ({"fit": {"freeze_embedder": "maybe"}}, "fit.freeze_embedder: must be true or false (got 'maybe')"),
        ({"prepare": {"val_fraction": 0.7}}, "prepare.val_fraction: must be less than 0.5 (got 0.7)"),
        ({"align": {"schedule": "both"}}, "align.schedule: must be 'joint' or 'sequential' (got 'both')"),
        ({"align": [1, 2]}, "align: must be a section of keys (got [1, 2])"),
        ({"tune": {"lambda_fa": [1, 2, 3]}}, "tune.lambda_fa: must have at most 2 items (got [1, 2, 3])"),
        ({"tune": {"fld_variant": ["kl"]}}, "tune.fld_variant[0]: must be 'ce' or 'mi' (got 'kl')"),
    ],
)
def test_messages_are_in_the_projects_words(raw, message):
    """The key and the problem, without pydantic's "Value error," or "Input should be"."""
    with pytest.raises(UserError) as err:
        parse_params(raw, source="defaults")  # a label, not a file: not named
    assert str(err.value) == message


def test_a_validators_hint_survives_and_no_pseudo_source_is_named(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(UserError) as err:
        parse_params({"task": f"npz:{missing}"}, source="defaults")
    assert str(err.value) == f"task 'npz:{missing}': the file {missing} does not exist"
    assert err.value.hint == "expected --task npz:PATH"


def test_the_file_is_named_for_the_keys_it_set_and_not_for_overrides(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("fit:\n  lrr: 1\nalign:\n  eps: -1\n")
    with pytest.raises(UserError) as err:
        load_params(f, ["prepare.val_fraction=0.7", "align.eps=-2"])
    problems = str(err.value).split("; ")
    assert f"{f}: fit.lrr: unknown key" in problems
    assert "prepare.val_fraction: must be less than 0.5 (got 0.7)" in problems  # from --set: no file
    assert "align.eps: must be greater than 0 (got -2)" in problems  # the override won over the file


def test_per_task_values_apply_to_their_task_and_an_explicit_set_wins():
    dna = load_params(ROOT / "params.yaml")
    tecator = load_params(ROOT / "params.yaml", ["task=tecator"])
    entry = dna.per_task["tecator"]
    assert tecator.fit.lr == entry["fit.lr"] != dna.fit.lr
    assert tecator.model.derivatives == entry["model.derivatives"] and dna.model.derivatives == 0
    assert tecator.model.linear_skip is entry["model.linear_skip"]
    assert tecator.align == dna.align and tecator.fit.batch_size == dna.fit.batch_size  # nothing else moves
    mine = load_params(ROOT / "params.yaml", ["task=tecator", "fit.lr=0.002"])
    assert mine.fit.lr == 0.002 and mine.fit.min_steps == entry["fit.min_steps"]
    # Without a params file the schema's entry applies the same way.
    assert parse_params({}).per_task == dna.per_task


def test_params_rebuilt_from_validated_params_keep_their_values():
    """A trial's or the tuned values are set on resolved params: the task's entry is not applied again."""
    from flows.search_space import with_values

    tecator = load_params(ROOT / "params.yaml", ["task=tecator"])
    assert with_values(tecator, {"fit.lr": 5e-5}).fit.lr == 5e-5


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"fit.nope": 1}, "per_task.tecator: 'fit.nope' is not a key of model or fit"),
        ({"align.eps": 0.2}, "'align.eps' is not a key of model or fit"),
        ({"model.body": "bert-base"}, "'model.body' cannot differ per task"),
        ({"fit.lr": -1.0}, "fit.lr"),
    ],
)
def test_bad_per_task_entries_name_the_key(tmp_path, entry, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"task": "tecator", "per_task": {"tecator": entry}}))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert fragment in str(err.value)
