"""Fault injection: does the pipeline survive real failures without losing or changing results?

Every scenario uses real processes and real signals: ``gan train`` and the in-process flow are
SIGKILLed (at a step or during a checkpoint write through ``$GANCORE_FAULTS``, or by this process
at a random moment), ``dvc repro`` is SIGKILLed in its train stage, a full disk is a real small
tmpfs where the machine allows mounting one (else the ``OSError`` is injected), and four flows run
at once in one project. After each fault the run is repeated and compared with an uninterrupted
one, bit for bit (CPU).

    python benchmarks/faults.py            # 3 trials of each random kill point
    python benchmarks/faults.py --tiny     # one trial each (CI)

Prints one row per fault: fault | trials | survived | results identical | data lost.

The script is split in three: ``faults_workspace.py`` (the tiny project, running ``gan`` and the
flows, comparing results), ``faults_scenarios.py`` (the faults) and this file (the command line).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults_scenarios import (  # noqa: E402
    RANDOM_POINTS,
    SCENARIOS,
    concurrent_flows,
    disk_full_checkpoint,
    disk_full_result,
    kill_dvc_repro,
    kill_flow,
    kill_train,
    transient_in_task,
)
from faults_workspace import (  # noqa: E402
    BIN,
    CHECKPOINT_EVERY,
    REPO,
    STEPS,
    TINY,
    Outcome,
    Row,
    Workspace,
    copy_repository,
    environment,
    flow,
    gan,
    killed,
    loadable,
    log_rows,
    same_state,
    same_training,
    state,
    write_params,
)

__all__ = [
    "BIN",
    "CHECKPOINT_EVERY",
    "RANDOM_POINTS",
    "REPO",
    "SCENARIOS",
    "STEPS",
    "TINY",
    "Outcome",
    "Row",
    "Workspace",
    "concurrent_flows",
    "copy_repository",
    "disk_full_checkpoint",
    "disk_full_result",
    "environment",
    "flow",
    "gan",
    "kill_dvc_repro",
    "kill_flow",
    "kill_train",
    "killed",
    "loadable",
    "log_rows",
    "main",
    "same_state",
    "same_training",
    "state",
    "transient_in_task",
    "write_params",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="one trial of each fault (CI)")
    parser.add_argument("--trials", type=int, default=3, help="trials of each randomly placed fault (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", default=None, help="run only faults whose name contains this")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gancore-faults-") as tmp:
        base = Path(tmp)
        # One Prefect home for the flows, warmed by the first; flows start their own local API.
        env = environment(PREFECT_HOME=str(base / "prefect-home"))
        env.pop("PREFECT_API_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)  # each project's own mlflow.db, as for a user
        ws = Workspace(base)
        for name, scenario in SCENARIOS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            trials = 1 if args.tiny or name not in RANDOM_POINTS else args.trials
            row = Row(name)
            for _ in range(trials):
                started = time.perf_counter()
                outcome = scenario(ws, rng, env)
                outcome.note += f" ({time.perf_counter() - started:.0f} s)"
                row.outcomes.append(outcome)
                print(
                    f"  {name}: survived={outcome.survived} identical={outcome.identical} lost={outcome.data_lost} - {outcome.note}",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append(row)
    from gancore.report import text_table

    print(text_table(["fault", "trials", "survived", "results identical", "data lost"], [r.cells() for r in rows]))
    bad = [r.fault for r in rows if any(not o.survived or not o.identical or o.data_lost for o in r.outcomes)]
    if bad:
        print(f"\nnot survived cleanly: {'; '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
