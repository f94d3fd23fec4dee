"""Metrics: aggregate per-sample results into a cell's figures, and measure peak memory.

Units: NLL in nats per token; PPL = exp(mean NLL over all scored tokens of the cell); kept
fractions are fractions of the context's KV entries; bytes are bytes; times are seconds.
No torch at import time.
"""

from __future__ import annotations

import math
import os
import resource
import sys

# Stable metric keys of a cell record (sessions, tables, exports all use these names).
CELL_METRICS = (
    "nll", "nll_stderr", "ppl", "ppl_stderr", "delta_ppl", "delta_ppl_pct", "delta_nll",
    "kept_fraction", "kept_fraction_physical", "kv_tokens_per_layer", "kv_bytes", "kv_bytes_physical",
    "prefill_seconds", "scoring_seconds", "compression_seconds", "seconds", "peak_memory_bytes",
    "score", "score_stderr", "delta_score", "metric",
    # Learned soft compressors: the compressor's parameter count.
    "compressor_params",
    # API evaluators: US dollars the cell's answers cost (from the usage the API reported; cost_estimated when
    # some sample's usage was counted locally instead), and the tokens sent and received.
    "cost_usd", "cost_estimated", "input_tokens", "output_tokens",
    # Decoding protocol: tokens generated per sample (mean), generation speed (tokens/s, prefill excluded) and its
    # ratio to the baseline's on the same samples, compression points per sample (mean), mean tokens per layer held
    # over the decoding steps.
    "generated_tokens", "tokens_per_second", "speed_ratio", "compressions", "kv_tokens_mean",
)


def aggregate(samples: list[dict], baseline: dict[str, dict] | None = None) -> dict:
    """Cell figures from its per-sample records.

    ``samples``: dicts with nll_sum, n_tokens and budget/timing fields. ``baseline``: the baseline
    cell's per-sample records by sample_id; deltas are computed over the samples both have, so a
    partially finished cell is still compared on the same tokens.
    """
    done = [s for s in samples if s.get("n_tokens") or s.get("score") is not None]
    if not done:
        return {}
    out: dict = {"tokens_scored": sum(s.get("n_tokens") or 0 for s in done)}
    scored = [s for s in done if s.get("n_tokens")]
    if scored:
        tokens = out["tokens_scored"]
        nll = sum(s["nll_sum"] for s in scored) / tokens
        stderr = _stderr([s["nll_sum"] / s["n_tokens"] for s in scored])
        out.update(nll=nll, nll_stderr=stderr, ppl=math.exp(nll),
                   ppl_stderr=math.exp(nll) * stderr if stderr is not None else None)  # delta method
    tasks = [s for s in done if s.get("score") is not None]
    if tasks:  # task protocol: mean score in [0, 1] (accuracy, exact match, ROUGE-L or F1)
        out["score"] = sum(s["score"] for s in tasks) / len(tasks)
        out["score_stderr"] = _stderr([s["score"] for s in tasks])
        out["metric"] = tasks[0].get("metric")
    for key in ("kept_fraction", "kept_fraction_physical", "kv_tokens_per_layer", "kv_bytes", "kv_bytes_physical"):
        values = [s[key] for s in done if s.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    for key in ("prefill_seconds", "scoring_seconds"):
        out[key] = sum(s.get(key) or 0.0 for s in done)
    compression = [s["compression_seconds"] for s in done if s.get("compression_seconds") is not None]
    out["compression_seconds"] = sum(compression) / len(compression) if compression else None  # per prompt
    out["seconds"] = out["prefill_seconds"] + out["scoring_seconds"] + sum(compression)
    params = [s["compressor_params"] for s in done if s.get("compressor_params") is not None]
    out["compressor_params"] = params[0] if params else None
    costs = [s["cost_usd"] for s in done if s.get("cost_usd") is not None]
    if costs:
        out["cost_usd"] = sum(costs)
        out["cost_estimated"] = any(s.get("cost_estimated") for s in done)
        out["input_tokens"] = sum(s.get("input_tokens") or 0 for s in done)
        out["output_tokens"] = sum(s.get("output_tokens") or 0 for s in done)
    out.update(_decoding(done, baseline))
    if baseline and tasks:
        both = [s for s in tasks if baseline.get(s["sample_id"], {}).get("score") is not None]
        if both:
            out["delta_score"] = sum(s["score"] - baseline[s["sample_id"]]["score"] for s in both) / len(both)
    if baseline and scored:
        shared = [s for s in scored if s["sample_id"] in baseline and baseline[s["sample_id"]].get("n_tokens")]
        if shared:
            b_tokens = sum(baseline[s["sample_id"]]["n_tokens"] for s in shared)
            b_nll = sum(baseline[s["sample_id"]]["nll_sum"] for s in shared) / b_tokens
            c_nll = sum(s["nll_sum"] for s in shared) / sum(s["n_tokens"] for s in shared)
            b_ppl, c_ppl = math.exp(b_nll), math.exp(c_nll)
            out["delta_nll"] = c_nll - b_nll
            out["delta_ppl"] = c_ppl - b_ppl
            out["delta_ppl_pct"] = 100.0 * (c_ppl - b_ppl) / b_ppl
    return out


def _tokens_per_second(samples: list[dict]) -> float | None:
    timed = [s for s in samples if s.get("decode_seconds") and s.get("generated_tokens")]
    seconds = sum(s["decode_seconds"] for s in timed)
    return sum(s["generated_tokens"] for s in timed) / seconds if seconds > 0 else None


def _decoding(done: list[dict], baseline: dict[str, dict] | None) -> dict:
    """The decoding protocol's cell figures (records with ``generated_tokens``)."""
    runs = [s for s in done if s.get("generated_tokens") is not None]
    if not runs:
        return {}
    out: dict = {"generated_tokens": sum(s["generated_tokens"] for s in runs) / len(runs),
                 "tokens_per_second": _tokens_per_second(runs),
                 "compressions": sum(len(s.get("compression_points") or []) for s in runs) / len(runs)}
    means = [s["kv_tokens_mean"] for s in runs if s.get("kv_tokens_mean") is not None]
    out["kv_tokens_mean"] = sum(means) / len(means) if means else None
    if baseline:
        shared = [s for s in runs if s["sample_id"] in baseline]
        mine, theirs = _tokens_per_second(shared), _tokens_per_second([baseline[s["sample_id"]] for s in shared])
        if mine and theirs:
            out["speed_ratio"] = mine / theirs
    return out


def _stderr(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var / len(values))


# ---------------------------------------------------------------------------------------------
# Peak memory. On a GPU: torch's peak allocated bytes. On a CPU: the process's peak resident set,
# reset per cell through /proc/self/clear_refs where Linux allows it (else the lifetime peak).


class PeakMemory:
    def __init__(self, device: str):
        self.device = device
        self.kind = "cuda" if device.startswith("cuda") else "rss"

    def reset(self) -> None:
        if self.kind == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # resets VmHWM (peak RSS) to the current RSS
            except OSError:
                pass

    def peak(self) -> int:
        if self.kind == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)


def free_accelerator_memory() -> None:
    """Between methods: drop cached GPU blocks so one method's peak does not starve the next."""
    import gc

    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
