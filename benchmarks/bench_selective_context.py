"""Selective Context cost: compression time per 1,000 tokens as a ratio to one forward pass of its
scoring model over the same tokens (target ≤ 1.5), and a 5-rate sweep scored once vs five times.

Usage: python benchmarks/bench_selective_context.py [--model smollm2-135m] [--tokens 1000] [--unit phrase] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--unit", default="phrase")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    from workbench.datasets import context_text, lm_samples
    from workbench.methods.prompt import build_compressor
    from workbench.models import load_model

    lm = load_model(args.model, device=args.device)
    (sample,) = lm_samples("wikitext2", lm.tokenizer, 1, args.tokens, 1, seed=0)
    text = context_text(sample, lm.tokenizer)
    ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]], device=lm.model.device)
    sc = build_compressor("selective-context", {"unit": args.unit})
    sc.load(lm)

    def forward():
        with torch.inference_mode():
            lm.model(input_ids=ids)
        if lm.model.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    forward()  # warm-up
    sc.compress(text, 0.5)
    rates = [0.9, 0.7, 0.5, 0.3, 0.1]
    t_forward = timed(forward)
    t_one = timed(lambda: sc.compress(text, 0.5))
    t_sweep_once = timed(lambda: sc.compress_rates(text, rates))
    t_sweep_each = timed(lambda: [sc.compress(text, r) for r in rates])
    n = ids.shape[1]
    per_k = 1000 / n
    rows = [
        ("one forward pass of the scoring model", f"{t_forward * per_k * 1000:.0f} ms / 1k tok", "1.00", ""),
        ("selective-context, one rate", f"{t_one * per_k * 1000:.0f} ms / 1k tok", f"{t_one / t_forward:.2f}", "≤ 1.5"),
        ("5-rate sweep, scored once", f"{t_sweep_once * per_k * 1000:.0f} ms / 1k tok", f"{t_sweep_once / t_forward:.2f}", ""),
        ("5-rate sweep, scored per rate", f"{t_sweep_each * per_k * 1000:.0f} ms / 1k tok", f"{t_sweep_each / t_forward:.2f}", ""),
    ]
    print(f"{args.model} on {lm.device}, {n} tokens of WikiText-2, unit={args.unit}, median of {args.repeats}\n")
    head = ("measure", "time", "ratio to forward", "target")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
