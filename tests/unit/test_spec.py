"""The model spec (config.json of a saved embedder or model): typed, round-trips through JSON as
the checkpoints store it, and a broken file is refused with its name and the key."""

import json

import pytest
import torch

from components.errors import CheckpointError
from components.model import build_embedder
from components.spec import EmbedderSpec, ModelSpec


def _spec() -> ModelSpec:
    embedder = EmbedderSpec(
        input_shape=(4, 100),
        d=16,
        max_tokens=10,
        overlap=2,
        motif_kernel=9,
        derivatives=1,
        difference_scales=(1.0, 0.5),
        init="fresh",
        body="minilm-l6",
        task="dna",
    )
    return ModelSpec(task="dna", task_type="binary", n_out=2, embedder=embedder, n_layers=None, linear_skip=False)


def test_a_model_spec_round_trips_through_its_config_file(tmp_path):
    spec = _spec()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))  # as save_checkpoint writes it
    assert ModelSpec.read(path) == spec
    raw = json.loads(path.read_text())
    assert raw["kind"] == "cross_modal_model" and raw["embedder"]["kind"] == "target_embedder"
    assert raw["embedder"]["difference_scales"] == [1.0, 0.5] and raw["embedder"]["input_shape"] == [4, 100]


def test_a_spec_rebuilds_the_same_embedder(tmp_path):
    spec = _spec().embedder
    first = build_embedder(spec)
    again = build_embedder(EmbedderSpec.from_json(json.loads(json.dumps(spec.to_json())), "config.json"))
    again.load_state_dict(first.state_dict())
    x = torch.randn(3, 4, 100)
    assert torch.equal(first(x), again(x))


def test_a_config_saved_before_the_newer_keys_gets_their_old_meaning(tmp_path):
    raw = _spec().to_json()
    for key in ("init", "derivatives", "difference_scales"):
        del raw["embedder"][key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    embedder = ModelSpec.read(path).embedder
    assert (embedder.init, embedder.derivatives, embedder.difference_scales) == ("fresh", 0, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.pop("n_out"), "config.json: key 'n_out' is missing"),
        (lambda raw: raw["embedder"].pop("d"), r"config.json \(embedder\): key 'd' is missing"),
    ],
)
def test_a_config_missing_a_key_names_the_file_and_the_key(tmp_path, change, message):
    raw = _spec().to_json()
    change(raw)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message):
        ModelSpec.read(path)


def test_an_unreadable_config_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not a readable model config"):
        ModelSpec.read(path)
    with pytest.raises(CheckpointError, match="not a readable model config"):
        ModelSpec.read(tmp_path / "absent" / "config.json")
