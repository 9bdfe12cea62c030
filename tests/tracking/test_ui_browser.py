"""The MLflow UI in a real browser: `gan ui` on a free port over a project with two pipeline runs,
opened in headless Chromium (Playwright); the runs table, a run page and the compare view show the
verdict, the headline metrics and the sample picture. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from gancore.cli import main
from helpers import browser_page, free_port, screenshot, venv_env, write_params

pytestmark = pytest.mark.xdist_group("browser")
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """Two tiny pipeline runs (seeds 0 and 1) in a project's own store, and `gan ui` over it."""
    import os

    root = tmp_path_factory.mktemp("ui-project")
    # A project of its own (a DVC repository), so its runs go to its mlflow.db, not the one of the
    # repository the tests run from (gancore.layout.find_project_root).
    (root / ".dvc").mkdir()
    write_params(root / "params.yaml", tracking={"experiment": "gancore-ui"})
    saved = os.environ.pop("MLFLOW_TRACKING_URI")  # the project's own mlflow.db, as for a user
    runs = []
    try:
        for seed in (0, 1):
            out = root / f"seed{seed}"
            for stage in ("prepare", "train", "sample", "evaluate", "diagnose"):
                assert main([stage, "--params", str(root / "params.yaml"), "--out", str(out), "-S", f"seed={seed}"]) == 0
            runs.append(json.loads((out / ".mlflow_run.json").read_text()))
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    port = free_port()
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(root / "ui.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gancore.cli", "ui", "--root", str(root), "--port", str(port)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (root / "ui.log").read_text()[-3000:]
            time.sleep(0.5)
    yield url, runs, root
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def page():
    with playwright.sync_playwright() as p:
        browser, page = browser_page(p)
        yield page
        browser.close()


def diagnosis(root, seed: int) -> dict:
    return json.loads((root / f"seed{seed}" / "metrics" / "diagnose.json").read_text())


def test_runs_table_lists_both_runs_in_the_model_training_view(ui, page):
    url, runs, root = ui
    experiment = runs[0]["experiment_id"]
    page.goto(f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    store = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for name in (store.get_run(r["run_id"]).info.run_name for r in runs):
        page.get_by_text(name).first.wait_for(timeout=60000)
    screenshot(page, "mlflow-runs-table")
    assert page.get_by_text("Model training").first.is_visible()


def test_run_page_shows_the_verdict_the_headline_metrics_and_the_samples(ui, page):
    url, runs, root = ui
    run = runs[0]
    page.goto(f"{url}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}?workflowType=machine_learning")
    verdict = diagnosis(root, 0)["verdict"]
    page.get_by_text(f"Verdict: {verdict}").first.wait_for(timeout=60000)
    for metric in ("is_mean", "fid", "js_divergence", "modes_covered", "high_quality_fraction"):
        page.get_by_role("cell", name=metric, exact=True).first.wait_for(timeout=30000)
    page.get_by_text("Show more").first.click()
    # The description's markdown picture (MLflow's sanitiser drops the alt text; the source stays).
    image = page.locator("img[src*='samples/samples.png']").first
    image.wait_for(timeout=30000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=30000)
    screenshot(page, "mlflow-run-page")
    assert image.is_visible()


def test_compare_view_of_two_runs_shows_their_verdicts_and_metrics(ui, page):
    url, runs, root = ui
    ids = json.dumps([r["run_id"] for r in runs])
    page.goto(f"{url}/#/compare-runs?runs={ids}&experiments={json.dumps([runs[0]['experiment_id']])}&workflowType=machine_learning")
    page.get_by_text("fid", exact=True).first.wait_for(timeout=60000)
    body = page.inner_text("body")
    assert "verdict" in body and diagnosis(root, 0)["verdict"] in body and diagnosis(root, 1)["verdict"] in body
    for metric in ("is_mean", "high_quality_fraction", "modes_covered"):
        assert metric in body, metric
    screenshot(page, "mlflow-compare-runs")
