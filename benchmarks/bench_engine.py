"""Engine overhead benchmark: prints a table of ratios measured in one run.

1. Baseline evaluation throughput through the real runner (samples drawn, prefill + continuation,
   session written after every sample) as a ratio to a bare ``model(input_ids)`` loop over the same
   tokens. Target ≥ 0.9.
2. ``workbench --help`` and ``workbench --dry-run --preset quickstart`` wall times (target < 0.5 s each) and
   whether torch got imported (it must not).

Usage: python benchmarks/bench_engine.py [--model smollm2-135m] [--samples 8] [--context 1024] [--continuation 128]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_command(args: list[str], repeats: int = 7) -> tuple[float, bool]:
    """Median wall time of `workbench ARGS` in a fresh process, and whether torch got imported."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    probe = (f"import sys, runpy; sys.argv=['workbench', *{args!r}]\ntry:\n runpy.run_module('workbench', run_name='__main__')\n"
             "except SystemExit: pass\nprint('torch' in sys.modules, file=sys.stderr)")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stderr.strip().endswith("True")
    return statistics.median(times), imported


def bench_throughput(model: str, samples: int, context: int, continuation: int, device: str) -> dict:
    import torch

    from workbench import runner
    from workbench.datasets import lm_samples
    from workbench.models import load_model
    from workbench.plan import parse_plan

    plan = parse_plan({"name": "bench", "model": model, "device": device, "datasets": [{"name": "wikitext2", "samples": samples}],
                       "protocol": {"context_tokens": context, "continuation_tokens": continuation}, "methods": []})
    lm = load_model(model, device=device)
    windows = lm_samples("wikitext2", lm.tokenizer, samples, context, continuation, 0)
    tokens = sum(len(w.input_ids) - 1 for w in windows)  # both loops process C + T tokens per sample

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for w in windows:
                lm.model(torch.tensor([w.input_ids[:-1]], device=lm.model.device))
        if lm.model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def engine() -> float:
        marks = {}

        def on_event(event):
            if event.kind in ("model-loaded", "run-finished"):
                marks[event.kind] = time.perf_counter()

        with tempfile.TemporaryDirectory() as tmp:
            runner.run(plan, on_event, out=str(Path(tmp) / "s.json"))
        return marks["run-finished"] - marks["model-loaded"]

    bare()  # warm-up: first-touch of the weights, allocator
    bare_t, engine_t = [], []
    for _ in range(3):  # interleaved so machine noise hits both alike
        bare_t.append(bare())
        engine_t.append(engine())
    b, e = min(bare_t), min(engine_t)
    return {"tokens": tokens, "bare_s": b, "engine_s": e, "bare_tps": tokens / b, "engine_tps": tokens / e, "ratio": b / e}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--continuation", type=int, default=128)
    args = p.parse_args()

    help_s, torch_loaded = bench_command(["--help"])
    dry_s, dry_torch = bench_command(["--dry-run", "--preset", "quickstart"])
    tp = bench_throughput(args.model, args.samples, args.context, args.continuation, args.device)
    rows = [
        ("baseline throughput, bare model loop", f"{tp['bare_tps']:,.0f} tok/s", "", ""),
        ("baseline throughput, workbench runner", f"{tp['engine_tps']:,.0f} tok/s", f"{tp['ratio']:.3f}", "≥ 0.9"),
        ("`workbench --help` wall time", f"{help_s * 1000:.0f} ms", f"{help_s / 0.5:.2f} of target", "< 500 ms"),
        ("torch imported by --help", "yes" if torch_loaded else "no", "", "no"),
        ("`workbench --dry-run --preset quickstart` wall time", f"{dry_s * 1000:.0f} ms", f"{dry_s / help_s:.2f} of --help",
         "< 500 ms"),
        ("torch imported by --dry-run", "yes" if dry_torch else "no", "", "no"),
    ]
    print(f"model {args.model}, {args.samples} samples × ({args.context} + {args.continuation}) tokens, best of 3\n")
    widths = [max(len(r[i]) for r in rows + [("measure", "value", "ratio", "target")]) for i in range(4)]
    for r in [("measure", "value", "ratio", "target"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
