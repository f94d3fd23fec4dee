"""What the ablation schedule costs: the shipped grid's 12 runs, each a real process that stands in for a training of
a fixed length (tests/fake_train_run.py with a sleep), on 1, 2 and 4 slots. Prints the wall time, the ideal time
(ceil(runs / slots) × run length) and the scheduler's overhead per run (process start, polling, record read).

    .venv/bin/python benchmarks/bench_ablation_schedule.py [--run-seconds 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from workbench.learned import ablation, grid

FAKE = [sys.executable, str(Path(__file__).resolve().parents[1] / "tests" / "fake_train_run.py")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-seconds", type=float, default=1.0, help="how long each stand-in training takes")
    args = parser.parse_args()
    data, source = grid.load_grid("ablation-squad")
    runs = grid.expand(data, source)
    print(f"{len(runs)} runs of ~{args.run_seconds:.1f} s each (a Python process: 3 steps, a record), {os.cpu_count()} CPUs")
    print(f"{'slots':>5}  {'wall s':>7}  {'ideal s':>7}  {'added per run s':>15}  {'done':>4}")
    for slots in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.update(WORKBENCH_DATA=str(Path(tmp, "data")), FAKE_TRAIN_LOG=tmp)
            os.environ["FAKE_TRAIN_STEP_SECONDS"] = str(args.run_seconds / 3)
            start = time.perf_counter()
            outcomes = ablation.schedule(runs, [f"cuda:{i}" for i in range(slots)],
                                         ablation.LocalLauncher(str(Path(tmp, "plans")), FAKE), poll_seconds=0.05)
            wall = time.perf_counter() - start
        waves = math.ceil(len(runs) / slots)
        ideal = waves * args.run_seconds
        print(f"{slots:>5}  {wall:>7.2f}  {ideal:>7.2f}  {(wall - ideal) / waves:>15.3f}  "
              f"{sum(o.status == 'done' for o in outcomes):>4}")


if __name__ == "__main__":
    main()
