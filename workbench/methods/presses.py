"""KV-cache eviction methods: every press of NVIDIA's kvpress, described without importing it.

The table below describes kvpress 0.5.5 (parameters and defaults as in its dataclasses) so plans
validate in milliseconds. :func:`build_press` imports kvpress and builds the press object for one
rate; a press the installed kvpress has that this table does not know is still usable by its
class name (see :func:`dynamic_info`).

Rate convention: the workbench's rate is the fraction of tokens *kept*; kvpress's
``compression_ratio`` is the fraction *removed*. :func:`build_press` is the one place that
converts (``compression_ratio = 1 - rate``).
"""

from __future__ import annotations

from typing import Any

from workbench.methods.registry import MethodInfo

CR = "compression_ratio"
_HUB = "needs artefacts from the Hugging Face hub"


def _press(name, cls, summary, params=None, rate_param=CR, nested=(), needs_hub=None, attention=None, aliases=(), builder=None):
    full = {CR: 0.0} if rate_param == CR else {}
    full.update(params or {})
    return MethodInfo(
        name=name,
        family="kv",
        summary=summary,
        params=full,
        rate_param=rate_param,
        nested=tuple(nested),
        implementation=cls,
        needs_hub=needs_hub,
        attention=attention,
        aliases=tuple(aliases),
        builder=builder,
    )


_DEFAULT_INNER = "expected-attention"

PRESSES: dict[str, MethodInfo] = {
    i.name: i
    for i in [
        # Score-based presses: one score per KV entry, the lowest are evicted.
        _press("random", "RandomPress", "evict uniformly at random (the floor any method must beat)", {"seed": None},
               builder="workbench.methods.seeded_random:DeviceIndependentRandomPress"),
        _press("knorm", "KnormPress", "evict keys with the largest L2 norm"),
        _press("streaming-llm", "StreamingLLMPress", "keep attention sinks and the most recent window", {"n_sink": 4}, aliases=("streamingllm",)),
        _press("snapkv", "SnapKVPress", "attention of the last window of queries, pooled", {"window_size": 64, "kernel_size": 5}),
        _press("expected-attention", "ExpectedAttentionPress", "attention expected from future queries (statistics of the queries)",
               {"n_future_positions": 512, "n_sink": 4, "use_covariance": True, "use_vnorm": True, "epsilon": 0.0}),
        _press("observed-attention", "ObservedAttentionPress", "average attention actually received during prefill (H2O-like)",
               attention="eager", aliases=("h2o",)),
        _press("tova", "TOVAPress", "attention of the last query (token omission via attention)"),
        _press("keydiff", "KeyDiffPress", "keys least similar to the mean key are kept"),
        _press("lagkv", "LagKVPress", "score by the statistics of the following lag window", {"n_sink": 4, "lag_size": 128, "cross_scoring": False}),
        _press("cur", "CURPress", "CUR decomposition leverage scores of keys and values",
               {"num_sinks": 4, "leverage_type": "kv_product", "use_random_leverage": False, "use_local_approximation": True, "local_window_size": 16}),
        _press("leverage", "LeverageScorePress", "statistical leverage of the keys (sketched)", {"sketch_dimension": 48}),
        _press("non-causal-attn", "NonCausalAttnPress", "non-causal attention within chunks", {"chunk_size": 256}),
        _press("compactor", "CompactorPress", "leverage blended with non-causal attention",
               {"sink_size_start": 8, "sink_size_end": 4, "chunk_size": 256, "sketch_dimension": 48, "blending": None}),
        _press("cap", "CapPress", "expected attention with a capped softmax", {"tau": 5.0, "n_future_positions": 512, "n_sink": 4, "epsilon": 1e-06}),
        _press("pyramidkv", "PyramidKVPress", "SnapKV scores with a pyramid of per-layer budgets", {"window_size": 64, "kernel_size": 5, "beta": 20}),
        _press("criticalkv", "CriticalKVPress", "two-stage selection weighted by the output projection of values",
               {"press": _DEFAULT_INNER, "epsilon": 1e-4, "first_stage_ratio": 0.5}, nested=("press",)),
        _press("kvzap", "KVzapPress", "a learned surrogate of KVzip+ scores on the hidden states",
               {"model_type": "mlp"}, needs_hub=_HUB + " (nvidia/KVzap-* scorer models)"),
        _press("qfilter", "QFilterPress", "project keys on learned query filters", {}, needs_hub=_HUB + " (nthngdy/* Q-filters)"),
        _press("expected-attention-stats", "ExpectedAttentionStatsPress", "expected attention with query statistics from a dataset",
               {"n_future_positions": 512, "n_sink": 4, "use_covariance": True, "use_vnorm": True, "epsilon": 0.0, "sample_seq_len": 1000,
                "num_samples": 100, "dataset_name": "kmfoda/booksum", "stats_folder": None},
               needs_hub=_HUB + " (statistics computed from kmfoda/booksum)"),
        # Wrappers: change how the scores of an inner press are turned into a selection.
        _press("adakv", "AdaKVPress", "head-wise budgets over an inner press's scores (masks entries)",
               {"press": _DEFAULT_INNER, "alpha_safeguard": 0.2}, rate_param=CR, nested=("press",), attention="!eager"),
        _press("critical-adakv", "CriticalAdaKVPress", "CriticalKV with AdaKV head-wise budgets (masks entries)",
               {"press": _DEFAULT_INNER, "alpha_safeguard": 0.2, "epsilon": 1e-4, "first_stage_ratio": 0.5}, nested=("press",), attention="!eager"),
        _press("chunkkv", "ChunkKVPress", "select whole chunks of tokens by an inner press's scores", {"press": _DEFAULT_INNER, "chunk_length": 20}, nested=("press",),
               attention="!eager"),
        _press("entropy-gated-chunkkv", "EntropyGatedChunkKVPress", "ChunkKV with smaller chunks where attention entropy is low",
               {"press": _DEFAULT_INNER, "chunk_length": 10, "low_entropy_chunk_length": 4}, nested=("press",), attention="!eager"),
        _press("chunk", "ChunkPress", "apply an inner press to fixed-size chunks of the context independently",
               {"press": _DEFAULT_INNER, "chunk_length": 1024}, nested=("press",), attention="!eager"),
        _press("block", "BlockPress", "apply an inner press block by block during prefill", {"press": "keydiff", "block_size": 128}, nested=("press",)),
        _press("key-rerotation", "KeyRerotationPress", "re-apply RoPE so kept keys sit at contiguous positions", {"press": _DEFAULT_INNER}, nested=("press",)),
        _press("merging", "MergingPress", "merge evicted entries into similar kept ones", {"press": _DEFAULT_INNER, "similarity_threshold": 0.0, "merge_fraction": 1.0}, nested=("press",)),
        _press("lukv", "LUKVPress", "layer budgets from a learned utility curve around an inner press",
               {"press": _DEFAULT_INNER, "sink": 4, "window": 1}, nested=("press",)),
        _press("composed", "ComposedPress", "apply several presses one after another (the rate goes to each)", {"presses": ["think", "snapkv"]},
               rate_param=CR, nested=("presses",)),
        _press("compression-ratio-decoding", "CompressionRatioDecodingPress", "compress during decoding to a target fraction",
               {"base_press": "knorm", "compression_interval": 512, "hidden_states_buffer_size": 256}, rate_param="target_compression_ratio",
               nested=("base_press",)),
        # Presses driven by their own parameters (threshold, sizes): rates do not apply, the kept fraction is measured.
        _press("dms", "DMSPress", "evict entries whose score falls below a threshold (KVzap-style; seed 004)",
               {"press": "kvzap", "threshold": -6.0, "sliding_window_size": 128, "decoding": True}, rate_param=None, nested=("press",),
               aliases=("threshold",), attention="!eager"),  # its masking attention fails under eager attention
        _press("decoding", "DecodingPress", "compress every N decoding steps to a fixed number of tokens",
               {"base_press": "knorm", "compression_interval": 512, "target_size": 2048, "hidden_states_buffer_size": 256}, rate_param=None,
               nested=("base_press",)),
        _press("cam", "CAMPress", "decoding press that merges evicted values into kept ones (CaM)",
               {"base_press": "knorm", "compression_interval": 512, "target_size": 2048, "hidden_states_buffer_size": 256,
                "merge_budget": 32}, rate_param=None, nested=("base_press",)),
        _press("prefill-decoding", "PrefillDecodingPress", "one press for prefill, another for decoding",
               {"prefilling_press": "snapkv", "decoding_press": None}, rate_param=None, nested=("prefilling_press", "decoding_press")),
        _press("per-layer-compression", "PerLayerCompressionPress", "an inner press with a compression ratio per layer (list, removed fraction)",
               {"press": "knorm", "compression_ratios": None}, rate_param=None, nested=("press",)),
        _press("simlayerkv", "SimLayerKVPress", "keep only initial and recent tokens in 'lazy' layers", {"lazy_threshold": 1.0, "n_last": 1, "n_recent": 1024, "n_initial": 4},
               rate_param=None),
        _press("think", "ThinKPress", "prune key channels (the rate is the fraction of key channels kept)", {"window_size": 32}, rate_param="key_channel_compression_ratio"),
        _press("duo-attention", "DuoAttentionPress", "streaming heads from learned patterns (the rate is the fraction of heads kept full)",
               {"on_the_fly_scoring": False}, rate_param="head_compression_ratio", needs_hub=_HUB + " (DuoAttention patterns) unless on_the_fly_scoring"),
        _press("finch", "FinchPress", "question-aware chunked selection (needs a delimiter between context and question)",
               {"chunk_length": None, "normalize_scores": True, "rerotate_keys": True}),
        _press("kvzip", "KVzipPress", "reconstruct the context to score entries (several passes)", {"layerwise": False, "n_sink": 4, "kvzip_plus_normalization": False, "chunk_size": 2048}),
        _press("kvgrad", "KVgradPress", "KVzip with gradient-based scores", {"layerwise": False, "n_sink": 4, "kvzip_plus_normalization": False, "chunk_size": 512}),
        _press("restorekv", "RestoreKVPress", "KVzip with a restoration model",
               {"layerwise": False, "n_sink": 4, "kvzip_plus_normalization": False, "chunk_size": 2048, "restore_embeddings": None,
                "restore_model_name": None, "encoding_restore_tokens": False}, needs_hub=_HUB + " (restoration model)"),
        _press("fastkvzip", "FastKVzipPress", "KVzip approximated by learned gates",
               {"layerwise": False, "n_sink": 4, "window_size": 4096, "window_ratio": 0.02},
               needs_hub=_HUB + " (FastKVzip gates)"),
        _press("kvcompose", "KVComposePress", "composite tokens from attention-guided per-head selection",
               {"structured": True, "agg_task": "max", "agg_group": "mean", "agg_head": "mean", "add_v_norm": False,
                "add_mean_across_heads": True, "keep_token_lower_bound": 0}),
    ]
}

# Presses whose scores do not depend on the rate, so one prefill can serve every rate. StreamingLLM's own score encodes the window size; it is replaced by an equivalent
# rate-free positional score (see kv_eval.rate_free_scores). Compactor blends by the rate unless
# 'blending' is given, CriticalKV budgets its first stage by the rate: both run per rate.
SHARED_SCORERS = {
    "random", "knorm", "streaming-llm", "snapkv", "expected-attention", "observed-attention", "tova", "keydiff",
    "lagkv", "cur", "leverage", "non-causal-attn", "cap", "kvzap", "qfilter", "expected-attention-stats",
    "pyramidkv",  # SnapKV's scores; its per-layer budget is recomputed for each rate from kvpress's own formula
}
# Wrappers whose selection the shared path reproduces exactly from the inner press's scores.
SHARED_WRAPPERS = {"adakv"}
# Presses that compress while decoding: their continuation is scored one token at a time under the press.
DECODING_PRESSES = {"dms", "decoding", "compression-ratio-decoding", "prefill-decoding", "cam"}


def rerotates_keys(name: str, params: dict[str, Any]) -> bool:
    """Presses that re-apply RoPE so the kept keys sit at positions 0..k-1: what follows must continue
    from the cache length k, not from the original context length."""
    return name == "key-rerotation" or (name == "finch" and bool(params.get("rerotate_keys", True)))


def draws_random_numbers(name: str, params: dict[str, Any]) -> bool:
    """Presses whose scores draw random numbers (random eviction, LeverageScore's sketch, CUR's optional
    projection): seeded per sample, so several samples cannot share one draw without changing results."""
    inner = params.get("press") if isinstance(params.get("press"), dict) else None
    if inner is not None and draws_random_numbers(inner["name"], inner.get("params", {})):
        return True
    return name in ("random", "leverage") or (name == "cur" and bool(params.get("use_random_leverage")))


def shared_prefill_reason(name: str, params: dict[str, Any]) -> str | None:
    """None when one prefill can serve every rate of this method; otherwise why it runs per rate."""
    if name == "compactor" and params.get("blending") is not None:
        return None
    if name in SHARED_SCORERS:
        return None
    if name in SHARED_WRAPPERS:
        inner = params["press"]["name"]
        return None if inner in SHARED_SCORERS and inner != "streaming-llm" else f"inner press {inner} runs per rate"
    if name in DECODING_PRESSES:
        return "compresses while decoding"
    if name == "compactor":
        return "blending defaults to the rate"
    if name == "criticalkv":
        return "its first-stage budget depends on the rate"
    return "its selection is not a rate-independent score"


def requirements(name: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(attention needed: 'eager'|'sdpa'|None, reason it cannot run offline or None) for a press and its inner presses."""
    info = PRESSES.get(name)
    attention, hub = None, None
    if info is not None:
        attention = {"eager": "eager", "!eager": "sdpa"}.get(info.attention or "")
        if info.needs_hub and not (name == "duo-attention" and params.get("on_the_fly_scoring")):
            hub = f"{name} {info.needs_hub}"
    for key in info.nested if info else ():
        value = params.get(key)
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, dict):
                a, h = requirements(inner["name"], inner["params"])
                if a == "eager" and attention == "sdpa":
                    attention = "conflict"
                attention = attention or a
                hub = hub or h
    return attention, hub


def build_press(name: str, params: dict[str, Any], rate: float | None):
    """Instantiate the kvpress press for one rate (fraction kept). Imports kvpress."""
    import importlib

    import kvpress

    info = PRESSES[name]
    if info.builder:
        module, class_name = info.builder.split(":")
        cls = getattr(importlib.import_module(module), class_name)
    else:
        cls = getattr(kvpress, info.implementation)
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in info.nested and value is not None:
            if isinstance(value, list):
                value = [build_press(v["name"], v["params"], rate) for v in value]
            else:
                value = build_press(value["name"], value["params"], rate)
        kwargs[key] = value
    if info.rate_param and rate is not None and not _rate_goes_to_inner(info):
        kwargs[info.rate_param] = round(1.0 - rate, 10)  # kvpress removes this fraction
    return cls(**kwargs)


def _rate_goes_to_inner(info: MethodInfo) -> bool:
    # Wrappers whose compression_ratio is a property forwarding to the wrapped press, or lists of presses.
    return info.implementation in {"AdaKVPress", "CriticalKVPress", "CriticalAdaKVPress", "ChunkKVPress", "EntropyGatedChunkKVPress",
                                   "ChunkPress", "BlockPress", "KeyRerotationPress", "MergingPress", "ComposedPress"}


def dynamic_info(class_name: str) -> MethodInfo | None:
    """Describe a press class the installed kvpress has but the table does not (a newer kvpress)."""
    import dataclasses

    import kvpress

    cls = getattr(kvpress, class_name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, kvpress.BasePress) or not dataclasses.is_dataclass(cls):
        return None
    params = {
        f.name: (f.default if f.default is not dataclasses.MISSING else None)
        for f in dataclasses.fields(cls)
        if f.init and not f.name.startswith("_")
    }
    return _press(class_name, class_name, (cls.__doc__ or "").strip().split("\n")[0], params, rate_param=CR if CR in params else None)
