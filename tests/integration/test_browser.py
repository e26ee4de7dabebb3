"""What a person sees: the MLflow UI, started by ``recraft ui`` on a tiny run's store, rendered
by headless Chromium. The runs table shows the pipeline run; the artifacts page shows its plots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.flows.test_cli_commands import ui_server

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",  # let the React app fetch and render before the dump
    "--window-size=1400,900",
]


def _chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium once; its stdout (the DOM for ``--dump-dom``)."""
    proc = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_mlflow_ui_shows_the_run_and_its_plots(tiny_run, tmp_path):
    import mlflow

    if not CHROMIUM.exists():  # a missing browser is a broken test machine, not a reason to skip
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (as root; .ci/run installs it)")
    root, ctx, result, settings = tiny_run
    client = mlflow.MlflowClient(tracking_uri=settings.resolved_tracking_uri())
    exp = client.get_experiment_by_name(settings.experiment).experiment_id
    runs = client.search_runs([exp])
    parent = next(r for r in runs if r.data.tags.get("recraft.pipeline") == "true")
    evaluate = next(r for r in runs if r.data.tags.get("recraft.stage") == "evaluate")
    profile = tmp_path / "chromium-profile"
    with ui_server(settings.resolved_tracking_uri(), tmp_path / "ui.log") as url:
        table = _chromium(profile, "--dump-dom", f"{url}/#/experiments/{exp}/runs")
        assert parent.info.run_name == "dna-recraft" and "dna-recraft" in table
        # The Dataset column names the pipeline run's splits (dataset inputs) with their digests.
        digests = {i.dataset.name: i.dataset.digest for i in parent.inputs.dataset_inputs}
        assert set(digests) == {"train.npz", "val.npz", "test.npz"}
        assert "train.npz" in table and digests["train.npz"][:8] in table, table[-3000:]
        # The pipeline run's page shows the git commit of the code (the suite runs in a checkout).
        overview = _chromium(profile, "--dump-dom", f"{url}/#/experiments/{exp}/runs/{parent.info.run_id}")
        commit = parent.data.tags.get("mlflow.source.git.commit")
        assert commit and commit[:7] in overview, overview[-3000:]
        page = f"{url}/#/experiments/{exp}/runs/{evaluate.info.run_id}/artifacts/plots/confusion.png"
        artifacts = _chromium(profile, "--dump-dom", page)
        assert "plots/confusion.png" in artifacts and "bound.png" in artifacts
        shot = tmp_path / "artifacts.png"
        _chromium(profile, f"--screenshot={shot}", page)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
