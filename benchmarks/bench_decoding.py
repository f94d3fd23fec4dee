"""Compression while decoding: tokens/s with the cache compressed every k generated tokens, against none.

For k in --intervals (default 16, 64, 256) the same prompt is continued by --new tokens (teacher-forced random
tokens, so every run feeds exactly as many, whatever the model would choose) with an ``interval`` schedule cutting
every layer's cache to --rate of the tokens seen by the --press's scores (workbench.decoding.loop, what the
``decoding`` protocol runs); the row's ratio is its tokens/s over uncompressed decoding's, measured in the same run.
Also: compression points, the mean tokens per layer held over the steps, and peak memory (CUDA max allocated on a
GPU; the process's peak resident set on a CPU, which the model dominates). Times are wall seconds of the decoding
steps (the prefill left out), the best of --repeats.

Usage: python benchmarks/bench_decoding.py [--model smollm2-135m] [--context 512] [--new 512] [--intervals 16,64,256]
       [--press knorm] [--rate 0.5] [--device auto] [--dtype auto] [--repeats 2]
On a GPU a random-weight model of a real size can stand in (speed does not depend on the weights):
       --model llama-8b-random  (Llama-3.1-8B config, bfloat16, random weights; needs no download)
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load(args):
    from workbench.models import load_model

    if args.model == "llama-8b-random":
        from bench_shared_prefill import random_llama_8b

        device = "cuda" if args.device == "auto" else args.device
        lm = random_llama_8b(device, "bfloat16" if args.dtype == "auto" else args.dtype)

        class _Tok:  # random ids have no text; the interval schedule reads none
            def decode(self, ids, skip_special_tokens=True):
                return ""

        lm.tokenizer = _Tok()
        return lm
    return load_model(args.model, args.device, args.dtype)


def run_once(lm, prompt, forced, every, press_name, rate):
    from workbench.decoding import curve as curves
    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval
    from workbench.methods.registry import lookup, resolve_params
    from workbench.metrics import PeakMemory

    peak = PeakMemory(str(lm.model.device))
    peak.reset()
    schedule = evictor = None
    if every is not None:
        schedule = Interval(every)
        evictor = loop.Evictor.for_press(lm.model, press_name, resolve_params(lookup(press_name, "kv"), {}),
                                         loop.Target(rate=rate))
    out = loop.decode(lm.model, lm.tokenizer, prompt, len(forced), set(), schedule, evictor, forced=forced)
    return {"tps": (len(forced) - 1) / out.decode_seconds, "points": len(out.points), "kv": curves.mean_tokens(out.curve),
            "peak": peak.peak()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--intervals", default="16,64,256")
    ap.add_argument("--press", default="knorm")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import random

    import torch

    lm = load(args)
    vocab = lm.model.config.vocab_size
    rng = random.Random(0)
    prompt = [rng.randrange(vocab) for _ in range(args.context)]
    forced = [rng.randrange(vocab) for _ in range(args.new)]
    runs = [None] + [int(k) for k in args.intervals.split(",")]
    run_once(lm, prompt, forced[:16], None, args.press, args.rate)  # warm-up
    best: dict = {}
    for _ in range(args.repeats):
        for every in runs:
            r = run_once(lm, prompt, forced, every, args.press, args.rate)
            if every not in best or r["tps"] > best[every]["tps"]:
                best[every] = r
    device = torch.cuda.get_device_name(lm.model.device) if lm.model.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"# {args.model} on {device} ({lm.dtype}), {args.context} prompt + {args.new} decoded tokens, "
          f"{args.press} to rate {args.rate:g} of the tokens seen, best of {args.repeats}")
    print(f"{'compress every':>14} | {'points':>6} | {'tokens/s':>8} | {'ratio':>5} | {'mean KV tok/layer':>17} | {'peak MiB':>8}")
    print(f"{'-' * 14} | {'-' * 6} | {'-' * 8} | {'-' * 5} | {'-' * 17} | {'-' * 8}")
    base = best[None]["tps"]
    for every in runs:
        r = best[every]
        name = "never" if every is None else f"{every} tokens"
        print(f"{name:>14} | {r['points']:>6} | {r['tps']:>8.1f} | {r['tps'] / base:>5.2f} | {r['kv']:>17.1f} | "
              f"{r['peak'] / 2**20:>8.0f}")


if __name__ == "__main__":
    main()
