"""One prefill for every rate: time and peak memory of a rate sweep, shared vs per-rate path.

For R rates the per-rate path costs a baseline prefill + R × (pressed prefill + continuation); the
shared path costs one prefill that keeps the full cache and the scores + R × (gather + continuation)
(the baseline comes from the same full cache). Prints, for R = 1, 3, 5, 9: both times, their ratio
(target ≥ 0.8 × R in a prefill-dominated setting) and the peak memory of each path, measured in one run.
Times are wall seconds on a GPU and process CPU seconds on a CPU (robust to other work on a shared machine).
Then one continuation step over the rate-0.5 cache, before/after: transformers' concatenating cache against the
kept entries gathered into a buffer with room for the continuation (kv_room), and whether the NLLs are identical.

Usage: python benchmarks/bench_shared_prefill.py [--model smollm2-135m] [--press snapkv] [--context 2048]
       [--continuation 64] [--rates 1,3,5,9] [--device auto] [--dtype auto] [--repeats 2] [--batch 1]
--batch B measures B samples of one length per forward pass on both paths (the runner's batch_size); times
are then for all B samples.
On a GPU, a random-weight model of a real size can stand in (speed does not depend on the weights):
       --model llama-8b-random  (Llama-3.1-8B config, bfloat16, random weights; needs no download)
On a GPU it also prints the plain prefill's throughput as a fraction of the GPU's bfloat16 matrix-multiply
peak, both measured in the same run (an 8192³ product through torch.matmul).
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
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # build the weights in their dtype: no float32 copy of 8B parameters
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)

    class _Tok:  # windows are random token ids, so no tokenizer is needed
        name_or_path = "random"

    return LoadedModel(spec="llama-8b-random", source="random", model=model, tokenizer=_Tok(), device=device, dtype=dtype,
                       attn_implementation="sdpa", load_seconds=0.0)


def matmul_peak(dtype, n: int = 8192, runs: int = 10) -> float:
    """The GPU's measured dense matrix-multiply rate (FLOP/s): median of timed n³ products on random data."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / sorted(times)[len(times) // 2]


def prefill_throughput(lm, sample, context: int, runs: int = 5) -> dict:
    """Plain prefill's FLOP rate against the matmul peak. FLOPs counted: 2 × (parameters of the linear layers
    the context passes through) per token, the LM head for the one position kept, and causal attention
    (QKᵀ and AV over the lower triangle: 2 × layers × C² × heads × head_dim)."""
    import torch

    from workbench import kv_eval

    model = lm.model
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    # named_parameters lists a tied LM head once (as the embedding)
    tied = embed.data_ptr() == head.data_ptr()
    linear = sum(p.numel() for p in model.parameters() if p.dim() == 2) - embed.numel() - (0 if tied else head.numel())
    head = head.numel()
    linear_flops = 2 * linear * context + 2 * head
    attention_flops = 2 * cfg.num_hidden_layers * context**2 * cfg.num_attention_heads * head_dim
    ctx = torch.tensor([sample.input_ids[:context]], device=model.device)
    kv_eval.prefill(model, ctx)
    seconds = sorted(kv_eval.prefill(model, ctx)[1] for _ in range(runs))[runs // 2]
    flops = linear_flops + attention_flops
    return {"seconds": seconds, "runs": runs, "flops": flops, "linear_flops": linear_flops,
            "attention_flops": attention_flops, "achieved": flops / seconds, "peak": matmul_peak(model.dtype)}


def continuation_step(lm, samples, args, press_name: str, params: dict, runs: int = 7) -> dict:
    """Wall time of one continuation pass over the rate-0.5 cache: transformers' concatenating DynamicCache layers
    (room 0: every layer's cache copied into a new tensor with the continuation) against the kept entries gathered
    into a buffer with room for the continuation (written in place). Runs interleaved; medians."""
    import torch

    from workbench import kv_eval
    from workbench.methods import presses
    from workbench.methods.press_build import build_press

    model = lm.model
    ctx = torch.tensor([s.input_ids[: args.context] for s in samples], device=model.device)
    cont = torch.tensor([s.input_ids[args.context :] for s in samples], device=model.device)
    resolved = presses.resolve(press_name, params)
    full = kv_eval.shared_prefill(model, ctx, resolved, build_press(press_name, params, 0.5))
    times: dict[int, list] = {0: [], args.continuation: []}
    nll: dict[int, list] = {}
    for _ in range(runs):
        for room, spent in times.items():
            cache, _ = kv_eval.cache_for_rate(model, full, 0.5, resolved, room=room)
            nll[room], _, seconds = kv_eval.continuation_nlls(model, cache, cont, args.context)
            spent.append(seconds)
            kv_eval.clear_masks(model)
            del cache
    med = {room: sorted(t)[len(t) // 2] for room, t in times.items()}
    return {"concat": med[0], "room": med[args.continuation], "runs": runs, "same": nll[0] == nll[args.continuation]}


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
    p.add_argument("--batch", type=int, default=1, help="samples per forward pass on both paths")
    args = p.parse_args()

    import torch

    from workbench import evaluate
    from workbench.datasets import LMSample, lm_samples
    from workbench.methods.registry import lookup, resolve_params
    from workbench.metrics import PeakMemory
    from workbench.models import load_model, resolve_device_dtype
    from workbench.plan import MethodSpec, ProtocolSpec

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    if args.model == "llama-8b-random":
        lm = random_llama_8b(device, dtype)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 128000, (args.batch, args.context + args.continuation + 1), generator=g)
        samples = [LMSample(f"random#{i}", tuple(int(t) for t in row), args.context) for i, row in enumerate(ids)]
    else:
        lm = load_model(args.model, device=device, dtype=dtype)
        samples = lm_samples("wikitext2", lm.tokenizer, args.batch, args.context, args.continuation, 0)
    sample = samples[0]
    protocol = ProtocolSpec(context_tokens=args.context, continuation_tokens=args.continuation)
    info = lookup(args.press)
    params = resolve_params(info, {})
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
    evaluate.evaluate_baseline_batch(lm, samples, protocol)

    throughput = prefill_throughput(lm, sample, args.context) if on_gpu else None

    rows = []
    for n in [int(x) for x in args.rates.split(",")]:
        rates = sweep(n)
        method = MethodSpec(name=info.name, label=info.name, params=params, rates=rates)

        def per_rate():
            evaluate.evaluate_baseline_batch(lm, samples, protocol)
            return evaluate.evaluate_kv_batch(lm, samples, method, rates, protocol, shared_allowed=False)

        def shared():
            # R = 1 still shares: the baseline comes from the one full cache (evaluate_kv alone would
            # take the per-rate path for a single rate, so call the shared pieces directly).
            from workbench import kv_eval
            from workbench.methods import presses
            from workbench.methods.press_build import build_press

            press = build_press(info.name, params, rates[0])
            ctx = torch.tensor([s.input_ids[: args.context] for s in samples], device=lm.model.device)
            cont = torch.tensor([s.input_ids[args.context :] for s in samples], device=lm.model.device)
            kv_eval.seed_sample(sample.sample_id)
            resolved = presses.resolve(info.name, params)
            full = kv_eval.shared_prefill(lm.model, ctx, resolved, press)
            out = {1.0: kv_eval.continuation_nlls(lm.model, kv_eval.cache_for_rate(lm.model, full, 1.0, resolved)[0], cont,
                                                  args.context)[0]}
            for rate in rates:  # as the runner does: each rate's entries gathered into room for the continuation
                cache, _ = kv_eval.cache_for_rate(lm.model, full, rate, resolved, room=args.continuation)
                out[rate] = kv_eval.continuation_nlls(lm.model, cache, cont, args.context)[0]
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
        worst = max(abs(r_sh[r][i] - row[r]["nll_sum"]) / abs(row[r]["nll_sum"]) for r in rates for i, row in enumerate(r_per))
        rows.append((n, t_per, t_sh, t_per / t_sh, 0.8 * n, m_per, m_sh, worst))

    step = continuation_step(lm, samples, args, info.name, params)

    gib = 1024**3
    print(f"{args.model} on {lm.device} ({lm.dtype}), press {args.press}, {args.context} context + {args.continuation} continuation tokens"
          + (f", {args.batch} samples per forward pass" if args.batch > 1 else "") + "\n")
    unit = "s" if on_gpu else "cpu-s"
    head = ("R", f"per-rate {unit}", f"shared {unit}", "ratio", "target", "peak per-rate", "peak shared", "max rel ΔNLL")
    print("  ".join(f"{h:>13}" for h in head))
    for n, tp, ts, ratio, target, mp, ms, worst in rows:
        print("  ".join(f"{v:>13}" for v in (n, f"{tp:.2f}", f"{ts:.2f}", f"{ratio:.2f}", f"≥ {target:.1f}",
                                                  f"{mp / gib:.2f} GiB", f"{ms / gib:.2f} GiB", f"{worst:.1e}")))
    print(f"\none continuation step ({args.continuation} tokens after the rate-0.5 cache, median of {step['runs']}, wall ms): "
          f"concatenating (DynamicCache) {step['concat'] * 1e3:.2f}, into the reserved room {step['room'] * 1e3:.2f}, "
          f"ratio {step['concat'] / step['room']:.2f}; NLL identical: {'yes' if step['same'] else 'NO'}")
    if lm.model.device.type == "cuda":
        print("\n(peak = torch's peak allocated GPU memory)")
        t = throughput
        print(f"\nplain prefill of {args.context} tokens: {t['seconds'] * 1e3:.1f} ms (median of {t['runs']}), "
              f"{args.context / t['seconds']:,.0f} tokens/s, {t['flops'] / 1e12:.1f} TFLOP "
              f"(linear layers {t['linear_flops'] / 1e12:.1f} + causal attention {t['attention_flops'] / 1e12:.1f})")
        print(f"achieved {t['achieved'] / 1e12:.0f} TFLOP/s; bfloat16 matmul peak measured here {t['peak'] / 1e12:.0f} TFLOP/s; "
              f"fraction {t['achieved'] / t['peak']:.2f} (target ≥ 0.5)")
    else:
        print("\n(times = process CPU seconds, all threads; peak = process peak RSS, reset before each measurement)")


if __name__ == "__main__":
    main()
