"""A sweep on N Ray workers: wall time, speed-up against one worker, and the scheduling overhead per unit.

Runs one plan in this process (the reference), then on N = 1, 2, … workers of one local Ray (started once,
outside the timings; its start is printed apart). For each N it prints the whole run's wall time (workers
loading the model included), the measuring time (from the last worker ready to the end), the speed-up of the
measuring time against one worker (target ≥ 0.9·N on GPUs for units of more than a few seconds), the overhead
per unit (a unit's round trip at the driver less the worker's own measuring time: dispatch, transfer of the
records, recording and the atomic save) and whether every record equals the single-process run's.

On a CPU each worker is one process with one torch thread (so N ≤ cores is the honest range); the reference
runs with torch's default threads unless OMP_NUM_THREADS says otherwise (OMP_NUM_THREADS=1 compares like with like;
on a loaded machine torch's default threads can be many times slower than one). On a machine with GPUs each worker holds one GPU and N goes up to the GPUs.

Usage: python benchmarks/bench_workers.py [--model smollm2-135m] [--workers 1,2] [--samples 8] [--context 512]
       [--continuation 64] [--methods knorm,snapkv] [--rates 0.5,0.25] [--device auto] [--dtype auto]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

TIMING = ("prefill_seconds", "scoring_seconds", "compression_seconds")


def plan_data(args) -> dict:
    return {"name": "bench-workers", "model": args.model, "device": args.device, "dtype": args.dtype,
            "datasets": [{"name": "wikitext2", "samples": args.samples, "seed": 0}],
            "protocol": {"name": "context-continuation", "context_tokens": args.context, "continuation_tokens": args.continuation},
            "rates": [float(r) for r in args.rates.split(",")], "methods": args.methods.split(",")}


def records(session) -> dict:
    return {k: {s["sample_id"]: {f: v for f, v in s.items() if f not in TIMING} for s in c["samples"]}
            for k, c in session.cells.items()}


def timed_run(plan, out: str) -> tuple[object, float, float, dict]:
    """(session, whole wall seconds, measuring wall seconds, run-finished data)."""
    from workbench import runner

    marks: dict = {}

    def on_event(event):
        if event.kind == "model-loaded":
            marks["loaded"] = time.perf_counter()
        elif event.kind == "run-finished":
            marks["finished"] = event.data

    start = time.perf_counter()
    session = runner.run(plan, on_event, out=out)
    end = time.perf_counter()
    return session, end - start, end - marks.get("loaded", start), marks.get("finished", {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--workers", default=None, help="comma-separated N (default: 1,2 on a CPU; 1..GPUs on GPUs)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--continuation", type=int, default=64)
    p.add_argument("--methods", default="knorm,snapkv")
    p.add_argument("--rates", default="0.5,0.25")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args()

    import ray

    from workbench.plan import parse_plan

    data = plan_data(args)
    folder = tempfile.mkdtemp(prefix="bench-workers-")
    single, single_wall, single_measure, _ = timed_run(parse_plan(data), os.path.join(folder, "single.json"))
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level="warning")
    ray_start = time.perf_counter() - start
    gpus = int(ray.cluster_resources().get("GPU", 0))
    ns = [int(n) for n in args.workers.split(",")] if args.workers else (list(range(1, gpus + 1)) if gpus else [1, 2])
    device = f"{gpus} GPU(s)" if gpus else f"CPU, {os.cpu_count()} cores, one torch thread per worker"
    units = len(single.cells) and sum(1 for c in single.cells.values() for _ in c["samples"])
    print(f"{args.model}, {args.samples} samples × ({len(single.cells)} cells), context {args.context} + {args.continuation}, "
          f"methods {args.methods} at rates {args.rates}; {device}; local Ray started in {ray_start:.1f}s (not counted); "
          f"load average at start {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(f"single process (reference, {threads} torch thread(s)): wall {single_wall:.1f}s, measuring {single_measure:.1f}s "
          f"({units} sample records)")
    print(f"{'workers':>7} {'wall s':>8} {'measuring s':>12} {'speed-up':>9} {'units':>6} {'overhead ms/unit':>17} {'same records':>13}")
    base = None
    for n in ns:
        session, wall, measuring, finished = timed_run(parse_plan({**data, "execution": {"workers": n}}),
                                                       os.path.join(folder, f"workers-{n}.json"))
        base = base or measuring
        overhead = finished.get("overhead_seconds_per_unit")
        print(f"{n:>7} {wall:>8.1f} {measuring:>12.1f} {base / measuring:>8.2f}× {finished.get('units', 0):>6} "
              f"{overhead * 1000 if overhead is not None else float('nan'):>17.1f} {str(records(session) == records(single)):>13}")
    ray.shutdown()


if __name__ == "__main__":
    main()
