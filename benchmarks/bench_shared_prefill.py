"""One prefill for every rate: time and peak memory of a rate sweep, shared vs per-rate path.

For R rates the per-rate path costs a baseline prefill + R × (pressed prefill + continuation); the
shared path costs one prefill that keeps the full cache and the scores + R × (gather + continuation)
(the baseline comes from the same full cache). Prints, for R = 1, 3, 5, 9: both times, their ratio
(target ≥ 0.8 × R in a prefill-dominated setting) and the peak memory of each path, measured in one run.
Times are wall seconds on a GPU and process CPU seconds on a CPU (robust to other work on a shared machine).

Usage: python benchmarks/bench_shared_prefill.py [--model smollm2-135m] [--press snapkv] [--context 2048]
       [--continuation 64] [--rates 1,3,5,9] [--device auto] [--dtype auto] [--repeats 2]
On a GPU, a random-weight model of a real size can stand in (speed does not depend on the weights):
       --model llama-8b-random  (Llama-3.1-8B config, bfloat16, random weights; needs no download)
"""

from __future__ import annotations

import argparse
import time


def sweep(n: int) -> list[float]:
    """n rates spread over (0, 1): 0.5 for one, else evenly from 0.9 down to 0.1."""
    if n == 1:
        return [0.5]
    return [round(0.9 - i * 0.8 / (n - 1), 4) for i in range(n)]


def random_llama_8b(device: str, dtype: str):
    """Llama-3.1-8B shapes with random weights (for throughput on a GPU; quality is meaningless)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models import LoadedModel

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch_dtype).eval()
    model.requires_grad_(False)

    class _Tok:  # windows are random token ids, so no tokenizer is needed
        name_or_path = "random"

    return LoadedModel(spec="llama-8b-random", source="random", model=model, tokenizer=_Tok(), device=device, dtype=dtype,
                       attn_implementation="sdpa", load_seconds=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--press", default="snapkv")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--continuation", type=int, default=64)
    p.add_argument("--rates", default="1,3,5,9")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path per R, interleaved; the best is kept")
    args = p.parse_args()

    import torch

    from workbench import evaluate
    from workbench.datasets import LMSample, lm_samples
    from workbench.methods.registry import lookup
    from workbench.metrics import PeakMemory
    from workbench.models import load_model, resolve_device_dtype
    from workbench.plan import MethodSpec, ProtocolSpec

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    if args.model == "llama-8b-random":
        lm = random_llama_8b(device, dtype)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 128000, (args.context + args.continuation + 1,), generator=g)
        sample = LMSample("random#0", tuple(int(i) for i in ids), args.context)
    else:
        lm = load_model(args.model, device=device, dtype=dtype)
        (sample,) = lm_samples("wikitext2", lm.tokenizer, 1, args.context, args.continuation, 0)
    protocol = ProtocolSpec(context_tokens=args.context, continuation_tokens=args.continuation)
    info = lookup(args.press)
    params = info.resolve_params({})
    peak = PeakMemory(lm.device)

    on_gpu = lm.model.device.type == "cuda"

    def timed(fn):
        """(seconds, peak bytes, result). On a GPU: wall time. On a CPU: the process's CPU time (all its
        threads), which other processes competing for the cores do not inflate the way they inflate wall time."""
        peak.reset()
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter() if on_gpu else time.process_time()
        result = fn()
        if on_gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() if on_gpu else time.process_time()) - start, peak.peak(), result

    # Warm-up (first touch of the weights, kernels).
    evaluate.evaluate_baseline(lm, sample, protocol)

    rows = []
    for n in [int(x) for x in args.rates.split(",")]:
        rates = sweep(n)
        method = MethodSpec(name=info.name, label=info.name, params=params, rates=rates)

        def per_rate():
            evaluate.evaluate_baseline(lm, sample, protocol)
            return evaluate.evaluate_kv(lm, sample, method, rates, protocol, shared_allowed=False)

        def shared():
            # R = 1 still shares: the baseline comes from the one full cache (evaluate_kv alone would
            # take the per-rate path for a single rate, so call the shared pieces directly).
            from workbench import kv_eval
            from workbench.methods import presses

            press = presses.build_press(info.name, params, rates[0])
            ctx = torch.tensor([sample.input_ids[: args.context]], device=lm.model.device)
            cont = torch.tensor([sample.input_ids[args.context :]], device=lm.model.device)
            kv_eval.seed_sample(sample.sample_id)
            full = kv_eval.shared_prefill(lm.model, ctx, info.name, press)
            out = {1.0: kv_eval.continuation_nll(lm.model, kv_eval.full_cache(full), cont, args.context)[0]}
            for rate in rates:
                cache, _ = kv_eval.cache_for_rate(lm.model, full, rate, info.name, params)
                out[rate] = kv_eval.continuation_nll(lm.model, cache, cont, args.context)[0]
                del cache
            return out

        # Interleaved repeats, best time kept: machine noise (other processes, frequency changes) only
        # ever adds time, and it hits both paths alike.
        runs_per, runs_sh = [], []
        for _ in range(args.repeats):
            runs_per.append(timed(per_rate))
            runs_sh.append(timed(shared))
        t_per, m_per, r_per = min(runs_per, key=lambda r: r[0])
        t_sh, m_sh, r_sh = min(runs_sh, key=lambda r: r[0])
        worst = max(abs(r_sh[r] - r_per[r]["nll_sum"]) / abs(r_per[r]["nll_sum"]) for r in rates)
        rows.append((n, t_per, t_sh, t_per / t_sh, 0.8 * n, m_per, m_sh, worst))

    gib = 1024**3
    print(f"{args.model} on {lm.device} ({lm.dtype}), press {args.press}, {args.context} context + {args.continuation} continuation tokens\n")
    unit = "s" if on_gpu else "cpu-s"
    head = ("R", f"per-rate {unit}", f"shared {unit}", "ratio", "target", "peak per-rate", "peak shared", "max rel ΔNLL")
    print("  ".join(f"{h:>13}" for h in head))
    for n, tp, ts, ratio, target, mp, ms, worst in rows:
        print("  ".join(f"{v:>13}" for v in (n, f"{tp:.2f}", f"{ts:.2f}", f"{ratio:.2f}", f"≥ {target:.1f}",
                                                  f"{mp / gib:.2f} GiB", f"{ms / gib:.2f} GiB", f"{worst:.1e}")))
    if lm.model.device.type == "cuda":
        print("\n(peak = torch's peak allocated GPU memory)")
    else:
        print("\n(times = process CPU seconds, all threads; peak = process peak RSS, reset before each measurement)")


if __name__ == "__main__":
    main()
