"""Where each stage reads and writes, relative to a workspace root. ``dvc.yaml`` lists the same paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ORDER", "Layout"]

# The stages, in the order they run (dvc.yaml lists the same).
ORDER = ("assets", "prepare", "source", "tune", "align", "fit", "evaluate")


@dataclass(frozen=True)
class Layout:
    """Paths of every stage output under ``root`` (the DVC repo, or ``recraft run --workdir``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    # assets
    @property
    def body_dir(self) -> Path:
        return self.root / "data" / "assets" / "body"

    @property
    def corpus_dir(self) -> Path:
        return self.root / "data" / "assets" / "source"

    @property
    def target_dir(self) -> Path:
        return self.root / "data" / "assets" / "target"

    # resumable state (not DVC outputs: removed once the stage's outputs are written)
    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def done_marker(self, stage: str) -> Path:
        """``recraft run`` records each finished stage here, with the fingerprint of its params
        (and of a user's data file)."""
        return self.root / "checkpoints" / "done" / f"{stage}.json"

    @property
    def written_dirs(self) -> tuple[Path, ...]:
        """Every directory the stages write into (atomically), for clean-up after a crash."""
        return tuple(self.root / d for d in ("data", "models", "checkpoints", "metrics", "plots"))

    @property
    def lock_file(self) -> Path:
        """Held (``flock``) by the ``recraft run`` working here: one run per workspace."""
        return self.root / "checkpoints" / "run.lock"

    # prepare
    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared"

    # source (stage 0)
    @property
    def source_dir(self) -> Path:
        return self.root / "models" / "source"

    # align (stage 1)
    @property
    def embedder_dir(self) -> Path:
        return self.root / "models" / "embedder"

    # fit (stage 2)
    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "model"

    # tune
    @property
    def tuned_params(self) -> Path:
        """The best values of the last search; align/fit/source read them when ``use_tuned``."""
        return self.root / "params.tuned.yaml"

    # metrics and plots
    def metrics(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.json"

    def plot(self, name: str) -> Path:
        return self.root / "plots" / name
