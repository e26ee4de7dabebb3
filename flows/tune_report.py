"""What a finished study says: the summary JSON and the figures logged on the study's parent run."""

from __future__ import annotations

import warnings
from pathlib import Path

from components.config import Params

__all__ = ["summarise", "figures"]


def summarise(study, storage_url: str, params: Params) -> dict:
    """Counts by state, the best trial, and every trial's number, state, value and params."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "target": params.tune.target,
        "n_trials": len(trials),
        **{f"n_{k}": v for k, v in counts.items()},
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        "best_params": {} if best is None else dict(best.params),
        "trials": [
            {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params)}
            for t in trials
        ],
    }


def figures(study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importance and parallel coordinates as PNG files.

    Importance and parallel coordinates need at least two completed trials; they are left out
    (not faked) below that.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots = {"history": ovm.plot_optimization_history}
    if n_complete >= 2:
        plots |= {"importance": ovm.plot_param_importances, "parallel": ovm.plot_parallel_coordinate}
    paths = []
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
            ax = plot(study)
        fig = (ax if not hasattr(ax, "__len__") else ax.flat[0]).get_figure()
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
