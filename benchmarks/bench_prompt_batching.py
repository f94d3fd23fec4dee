"""Prompt-compressor throughput, batched vs one sample at a time: Selective Context's scoring alone
(compress_many vs compress_rates), and whole prompt cells of the perplexity protocol (compress, prefill the
compressed contexts, score the continuation: evaluate_prompt_batch vs evaluate_prompt), with the largest NLL
difference between the two paths.

Usage: python benchmarks/bench_prompt_batching.py [--model smollm2-135m] [--device auto] [--samples 8]
                                                  [--context 512] [--continuation 64] [--batch 8]
"""

from __future__ import annotations

# ruff: noqa: B023 - every lambda below is called at once, inside its loop iteration

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--continuation", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()

    from workbench import evaluate
    from workbench.datasets import context_text, lm_samples
    from workbench.methods.prompt import build_compressor
    from workbench.models.loader import load_model
    from workbench.plan import ProtocolSpec

    lm = load_model(args.model, device=args.device)
    lm.set_attention("sdpa")
    protocol = ProtocolSpec(context_tokens=args.context, continuation_tokens=args.continuation)
    samples = lm_samples("wikitext2", lm.tokenizer, args.samples, args.context, args.continuation, seed=0)
    texts = [context_text(s, lm.tokenizer) for s in samples]
    rates = [0.3, 0.5, 0.7]
    sc = build_compressor("selective-context", {})
    sc.load(lm)
    sc.compress_many(texts[:2], rates)  # warm-up

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    rows = []
    t_one, one = timed(lambda: [sc.compress_rates(t, rates) for t in texts])
    t_many, many = timed(lambda: sc.compress_many(texts, rates, batch_size=args.batch))
    same = all(a[r].text == b[r].text for a, b in zip(one, many) for r in rates)
    rows.append(("selective-context scoring + cut", t_one, t_many, "yes" if same else "NO", ""))
    for name in ("selective-context", "naive"):
        c = sc if name == "selective-context" else build_compressor(name, {})
        c.load(lm)
        t_one, one = timed(lambda: [evaluate.evaluate_prompt(lm, s, c, rates, protocol) for s in samples])
        t_many, many = timed(lambda: [r for at in range(0, len(samples), args.batch) for r in evaluate.evaluate_prompt_batch(
            lm, samples[at:at + args.batch], c, rates, protocol, set())])
        same = all(a[r]["compressed_tokens"] == b[r]["compressed_tokens"] for a, b in zip(one, many) for r in rates)
        diff = max(abs(a[r]["nll_sum"] - b[r]["nll_sum"]) for a, b in zip(one, many) for r in rates)
        rows.append((f"{name} cells (compress + prefill + NLL)", t_one, t_many, "yes" if same else "NO", f"{diff:.1e}"))

    print(f"\n{args.model} on {lm.model.device}, {args.samples} WikiText-2 samples of {args.context}+{args.continuation} "
          f"tokens, rates {rates}, batch {args.batch}")
    print("| what | one at a time (samples/s) | batched (samples/s) | speed-up | same texts | max NLL diff (nats) |")
    print("|---|---|---|---|---|---|")
    for what, t1, t2, same, diff in rows:
        n = len(samples)
        print(f"| {what} | {n / t1:.2f} | {n / t2:.2f} | {t1 / t2:.2f}x | {same} | {diff} |")


if __name__ == "__main__":
    main()
