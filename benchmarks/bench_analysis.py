"""How well the threshold analysis recovers known breakpoints, and how long it takes: sessions with known curves
written through the real session writer (tests/synthetic_sessions.py), analysed as `workbench analyze` does.

Prints, per design (samples per rate, noise): breakpoints found, covered by the profile interval the report
gives and by piecewise-regression's delta-method interval, straight lines declined, and seconds per draw.

    .venv/bin/python benchmarks/bench_analysis.py [--draws 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import synthetic_sessions as synth  # noqa: E402
from workbench.analysis import curves  # noqa: E402
from workbench.analysis.data import load_sessions, observations  # noqa: E402


def run(draws: int, samples: int, noise: float, folder: Path) -> list:
    rng = np.random.default_rng(1)
    found = profile = delta = declined = 0
    start = time.perf_counter()
    for i in range(draws):
        bp = float(rng.uniform(0.3, 0.7))
        path = synth.write(folder / f"k{i}.json", rng, {"snapkv": synth.kinked(bp)}, samples=samples, noise=noise)
        th = curves.threshold(observations(load_sessions([path])).of("snapkv"))
        if th["status"] == "found":
            found += 1
            profile += th["ci"][0] <= bp <= th["ci"][1]
            dm = th.get("muggeo", {}).get("delta_method_ci")
            delta += bool(dm and dm[0] <= bp <= dm[1])
        path = synth.write(folder / f"l{i}.json", rng, {"snapkv": synth.straight}, samples=samples, noise=noise)
        declined += curves.threshold(observations(load_sessions([path])).of("snapkv"))["status"] == "declined"
    seconds = (time.perf_counter() - start) / (2 * draws)
    return [samples, noise, f"{found}/{draws}", f"{profile}/{draws}", f"{delta}/{draws}", f"{declined}/{draws}",
            f"{seconds:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args()
    head = ["samples/rate", "noise sd", "r* found", "in profile CI", "in delta-method CI", "lines declined", "s/draw"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for samples, noise in ((8, 0.08), (16, 0.08), (8, 0.15)):
            rows.append(run(args.draws, samples, noise, Path(folder)))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


if __name__ == "__main__":
    main()
