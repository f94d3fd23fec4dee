"""KV-cache eviction methods: every press of NVIDIA's kvpress, described without importing it.

Each entry says what the engine needs to know about a press — its **traits** (:class:`PressTraits`):
whether its scores let one prefill serve every rate, whether it compresses while decoding, re-rotates
keys, draws random numbers, which attention it needs, how it behaves under the chunked protocol, what
it may wrap, and its parameters' types and ranges. The engine reads traits and never asks for a press by
name (kvpress's habit one level up: a press declares itself). The table describes kvpress 0.5.5, so plans
validate in milliseconds without importing it; ``press_build.build_press`` builds the press for one rate.

Rate convention: the workbench's rate is the fraction of tokens *kept*; kvpress's ``compression_ratio``
is the fraction *removed*. :func:`compression_ratio` is the one place that converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from workbench.methods.info import MethodInfo, ParamRule

CR = "compression_ratio"
_HUB = "needs artefacts from the Hugging Face hub"


def compression_ratio(rate: float) -> float:
    """kvpress's ``compression_ratio`` (fraction removed) for a workbench rate (fraction kept)."""
    return round(1.0 - rate, 10)


@dataclass(frozen=True)
class PressTraits:
    """What the engine needs to know about a press, written down once on its registry entry."""

    # A ScorerPress: one score per KV entry, the lowest evicted. Such presses can be wrapped (AdaKV, ChunkKV, …)
    # and compressed chunk by chunk under the chunked protocol.
    scorer: bool = False
    # One prefill serves every rate (the scores do not depend on the rate), else why not. A wrapper with
    # ``shares_inner_scores`` is shared when its inner press is.
    per_rate_reason: str | None = None
    # The parameter that, when set (not None), makes the scores rate-free after all (CompactorPress's blending).
    shared_when_set: str | None = None
    # "module:function" of a rate-free score equivalent to the press's own (whose score encodes the rate).
    rate_free_score: str | None = None
    # The press sets a budget per layer from the rate (``get_layer_budget``, PyramidKV).
    layer_budget: bool = False
    # A wrapper whose selection the shared path reproduces from the inner press's stored scores (AdaKV's
    # head-wise masks: entries are masked, not removed).
    shares_inner_scores: bool = False
    # Masks entries instead of removing them (logical budget ≠ memory); never batched.
    headwise_mask: bool = False
    # Compresses while decoding: continuations are scored one token at a time under the press.
    decoding: bool = False
    # Re-applies RoPE so kept keys sit at 0..k-1 (True, or the name of the boolean parameter that decides).
    rerotates_keys: bool | str = False
    # Draws random numbers (True, or the name of the boolean parameter that decides): seeded per sample,
    # so samples cannot share one draw in a batch.
    random: bool | str = False
    # Its compression_ratio forwards to the wrapped press (the rate goes to the inner press).
    forwards_rate: bool = False
    # What a nested press must be: "scorer", "scorer-or-headwise" (DecodingPress's base), or None (any).
    wraps: str | None = None
    # Presses it refuses inside (ComposedPress cannot hold AdaKV or the KVzip family).
    refuses_inner: tuple[str, ...] = ()
    # The parameter that, when true, removes the need for hub artefacts (DuoAttention's on-the-fly scoring).
    hub_unless: str | None = None
    # Workbench parameters given as fractions KEPT that kvpress takes as fractions removed: {ours: kvpress's}.
    kept_lists: dict[str, str] = field(default_factory=dict)
    # The score threshold a rate-matched cell sets per sample to keep the rate (see MethodInfo.rates_when and
    # workbench.threshold_match); the measured kept fraction is recorded either way.
    threshold_param: str | None = None
    # Parameters of the workbench's own, not passed to the kvpress class.
    own_params: tuple[str, ...] = ()
    # Parameters naming a local folder (when set): checked to exist before a run (preflight).
    folder_params: tuple[str, ...] = ()
    # Between decoding steps (a decoding schedule's points) a scorer press is handed the last hidden states entering
    # each layer's attention, not one per cached entry. What that asks of a press:
    # - the parameter giving how many of the last tokens' queries its score reads over the cache's last entries
    #   (SnapKV's ``window_size``; it asserts more hidden states than that): the loop keeps one more hidden state
    #   than the window, and narrows the window where fewer of the latest tokens are held;
    query_window: str | None = None
    # - the press's method taking ``q_len``, where its expected future queries start (ExpectedAttention's
    #   ``apply_avg_rope``): the press reads it from the hidden states' length, in a prefill the tokens seen but
    #   between decoding steps the buffer's length, so the loop passes the tokens seen;
    future_positions: str | None = None
    # - why its score cannot be taken there at all (a schedule refuses the press when the plan is validated).
    not_between_steps: str | None = None


def _press(name, cls, summary, params=None, rate_param=CR, nested=(), needs_hub=None, attention=None, aliases=(), builder=None,
           traits: PressTraits | None = None, rules: dict[str, ParamRule] | None = None, rates_when: str | None = None):
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
        traits=traits or PressTraits(),
        rules=rules or {},
        rates_when=rates_when,
    )


_DEFAULT_INNER = "expected-attention"
R = ParamRule
_POS, _NONNEG, _FRACTION = R(minimum=1), R(minimum=0), R(minimum=0, maximum=1)
SCORER = PressTraits(scorer=True)
_WRAPPER = PressTraits(per_rate_reason="its selection is not a rate-independent score", forwards_rate=True, wraps="scorer")
_KVZIP = PressTraits(per_rate_reason="it reconstructs the context to score entries, per rate", headwise_mask=True)
_DECODING = PressTraits(per_rate_reason="compresses while decoding", decoding=True, wraps="scorer-or-headwise")
_NOT_SCORE = "its selection is not a rate-independent score"
_EVERY_HIDDEN = "it scores every cached entry from that token's own hidden state, which is not kept after the prefill"
_WINDOW = PressTraits(scorer=True, query_window="window_size")
_EXPECTED = PressTraits(scorer=True, future_positions="apply_avg_rope")

PRESSES: dict[str, MethodInfo] = {
    i.name: i
    for i in [
        # Score-based presses: one score per KV entry, the lowest are evicted.
        _press("random", "RandomPress", "evict uniformly at random (the floor any method must beat)", {"seed": None},
               builder="workbench.methods.seeded_random:DeviceIndependentRandomPress", traits=replace(SCORER, random=True),
               rules={"seed": R(kind=int, minimum=0, optional=True)}),
        _press("knorm", "KnormPress", "evict keys with the largest L2 norm", traits=SCORER),
        _press("streaming-llm", "StreamingLLMPress", "keep attention sinks and the most recent window", {"n_sink": 4}, aliases=("streamingllm",),
               traits=replace(SCORER, rate_free_score="workbench.methods.press_scores:streaming_positions"), rules={"n_sink": _NONNEG}),
        _press("snapkv", "SnapKVPress", "attention of the last window of queries, pooled", {"window_size": 64, "kernel_size": 5},
               traits=_WINDOW, rules={"window_size": _POS, "kernel_size": _POS}),
        _press("expected-attention", "ExpectedAttentionPress", "attention expected from future queries (statistics of the queries)",
               {"n_future_positions": 512, "n_sink": 4, "use_covariance": True, "use_vnorm": True, "epsilon": 0.0}, traits=_EXPECTED,
               rules={"n_future_positions": _POS, "n_sink": _NONNEG, "epsilon": _NONNEG}),
        _press("observed-attention", "ObservedAttentionPress", "average attention actually received during prefill (H2O-like)",
               attention="eager", aliases=("h2o",), traits=SCORER),
        _press("tova", "TOVAPress", "attention of the last query (token omission via attention)", traits=SCORER),
        _press("keydiff", "KeyDiffPress", "keys least similar to the mean key are kept", traits=SCORER),
        _press("lagkv", "LagKVPress", "score by the statistics of the following lag window", {"n_sink": 4, "lag_size": 128, "cross_scoring": False},
               traits=SCORER, rules={"n_sink": _NONNEG, "lag_size": _POS}),
        _press("cur", "CURPress", "CUR decomposition leverage scores of keys and values",
               {"num_sinks": 4, "leverage_type": "kv_product", "use_random_leverage": False, "use_local_approximation": True, "local_window_size": 16},
               traits=replace(SCORER, random="use_random_leverage"),
               rules={"num_sinks": _NONNEG, "local_window_size": _POS, "leverage_type": R(choices=("key", "value", "kv_avg", "kv_product"))}),
        _press("leverage", "LeverageScorePress", "statistical leverage of the keys (sketched)", {"sketch_dimension": 48},
               traits=replace(SCORER, random=True, not_between_steps=_EVERY_HIDDEN), rules={"sketch_dimension": _POS}),
        _press("non-causal-attn", "NonCausalAttnPress", "non-causal attention within chunks", {"chunk_size": 256},
               traits=replace(SCORER, not_between_steps=_EVERY_HIDDEN),
               rules={"chunk_size": _POS}),
        _press("compactor", "CompactorPress", "leverage blended with non-causal attention",
               {"sink_size_start": 8, "sink_size_end": 4, "chunk_size": 256, "sketch_dimension": 48, "blending": None},
               traits=replace(SCORER, random=True, per_rate_reason="blending defaults to the rate", shared_when_set="blending",
                              not_between_steps=_EVERY_HIDDEN),
               rules={"sink_size_start": _NONNEG, "sink_size_end": _NONNEG, "chunk_size": _POS, "sketch_dimension": _POS,
                      "blending": R(kind=float, minimum=0, maximum=1, optional=True)}),
        _press("cap", "CapPress", "expected attention with a capped softmax", {"tau": 5.0, "n_future_positions": 512, "n_sink": 4, "epsilon": 1e-06},
               traits=replace(SCORER, future_positions="_apply_avg_rope"),
               rules={"tau": R(kind=float, minimum=0, open_minimum=True), "n_future_positions": _POS, "n_sink": _NONNEG,
                      "epsilon": _NONNEG}),
        _press("pyramidkv", "PyramidKVPress", "SnapKV scores with a pyramid of per-layer budgets", {"window_size": 64, "kernel_size": 5, "beta": 20},
               traits=replace(_WINDOW, layer_budget=True), rules={"window_size": _POS, "kernel_size": _POS, "beta": _POS}),
        _press("criticalkv", "CriticalKVPress", "two-stage selection weighted by the output projection of values",
               {"press": _DEFAULT_INNER, "epsilon": 1e-4, "first_stage_ratio": 0.5}, nested=("press",),
               traits=replace(_WRAPPER, scorer=True, per_rate_reason="its first-stage budget depends on the rate"),
               rules={"epsilon": _NONNEG, "first_stage_ratio": _FRACTION}),
        _press("kvzap", "KVzapPress", "a learned surrogate of KVzip+ scores on the hidden states (train: workbench train-kvzap)",
               {"model_type": "mlp", "scorer": None},
               needs_hub="needs a trained scorer: one `workbench train-kvzap` made for the model, a folder in 'scorer', or the hub's "
                         "nvidia/KVzap-* models",
               builder="workbench.methods.kvzap_press:WorkbenchKVzapPress",
               traits=replace(SCORER, folder_params=("scorer",), not_between_steps=_EVERY_HIDDEN),
               rules={"model_type": R(choices=("linear", "mlp")), "scorer": R(kind=str, optional=True)}),
        _press("qfilter", "QFilterPress", "project keys on learned query filters", {}, needs_hub=_HUB + " (nthngdy/* Q-filters)", traits=SCORER),
        _press("expected-attention-stats", "ExpectedAttentionStatsPress", "expected attention with query statistics from a dataset",
               {"n_future_positions": 512, "n_sink": 4, "use_covariance": True, "use_vnorm": True, "epsilon": 0.0, "sample_seq_len": 1000,
                "num_samples": 100, "dataset_name": "kmfoda/booksum", "stats_folder": None},
               needs_hub=_HUB + " (statistics computed from kmfoda/booksum)", traits=_EXPECTED,
               rules={"n_future_positions": _POS, "n_sink": _NONNEG, "epsilon": _NONNEG, "sample_seq_len": _POS, "num_samples": _POS}),
        # Wrappers: change how the scores of an inner press are turned into a selection.
        _press("adakv", "AdaKVPress", "head-wise budgets over an inner press's scores (masks entries)",
               {"press": _DEFAULT_INNER, "alpha_safeguard": 0.2}, rate_param=CR, nested=("press",), attention="!eager",
               traits=replace(_WRAPPER, per_rate_reason=None, shares_inner_scores=True, headwise_mask=True),
               rules={"alpha_safeguard": _FRACTION}),
        _press("critical-adakv", "CriticalAdaKVPress", "CriticalKV with AdaKV head-wise budgets (masks entries)",
               {"press": _DEFAULT_INNER, "alpha_safeguard": 0.2, "epsilon": 1e-4, "first_stage_ratio": 0.5}, nested=("press",), attention="!eager",
               traits=replace(_WRAPPER, headwise_mask=True), rules={"alpha_safeguard": _FRACTION, "epsilon": _NONNEG, "first_stage_ratio": _FRACTION}),
        _press("chunkkv", "ChunkKVPress", "select whole chunks of tokens by an inner press's scores", {"press": _DEFAULT_INNER, "chunk_length": 20},
               nested=("press",), attention="!eager", traits=_WRAPPER, rules={"chunk_length": _POS}),
        _press("entropy-gated-chunkkv", "EntropyGatedChunkKVPress", "ChunkKV with smaller chunks where attention entropy is low",
               {"press": _DEFAULT_INNER, "chunk_length": 10, "low_entropy_chunk_length": 4}, nested=("press",), attention="!eager",
               traits=_WRAPPER, rules={"chunk_length": R(minimum=2), "low_entropy_chunk_length": _POS}),
        _press("chunk", "ChunkPress", "apply an inner press to fixed-size chunks of the context independently",
               {"press": _DEFAULT_INNER, "chunk_length": 1024}, nested=("press",), attention="!eager", traits=_WRAPPER,
               rules={"chunk_length": _POS}),
        _press("block", "BlockPress", "apply an inner press block by block during prefill", {"press": "keydiff", "block_size": 128}, nested=("press",),
               traits=_WRAPPER, rules={"block_size": _POS}),
        _press("key-rerotation", "KeyRerotationPress", "re-apply RoPE so kept keys sit at contiguous positions", {"press": _DEFAULT_INNER},
               nested=("press",), traits=replace(_WRAPPER, rerotates_keys=True)),
        _press("merging", "MergingPress", "merge evicted entries into similar kept ones",
               {"press": _DEFAULT_INNER, "similarity_threshold": 0.0, "merge_fraction": 1.0}, nested=("press",), traits=_WRAPPER,
               rules={"similarity_threshold": _FRACTION, "merge_fraction": R(kind=float, minimum=0, maximum=1, open_minimum=True)}),
        _press("lukv", "LUKVPress", "layer budgets from a learned utility curve around an inner press",
               {"press": _DEFAULT_INNER, "sink": 4, "window": 1}, nested=("press",), attention="!eager",
               traits=replace(_WRAPPER, forwards_rate=False), rules={"sink": _NONNEG, "window": _NONNEG}),
        _press("composed", "ComposedPress", "apply several presses one after another (the rate goes to each)", {"presses": ["think", "snapkv"]},
               rate_param=CR, nested=("presses",),
               traits=replace(_WRAPPER, wraps=None, refuses_inner=("adakv", "critical-adakv", "kvzip", "kvgrad", "restorekv", "fastkvzip"))),
        _press("compression-ratio-decoding", "CompressionRatioDecodingPress", "compress during decoding to a target fraction",
               {"base_press": "knorm", "compression_interval": 512, "hidden_states_buffer_size": 256}, rate_param="target_compression_ratio",
               nested=("base_press",), traits=_DECODING, rules={"compression_interval": _POS, "hidden_states_buffer_size": _NONNEG}),
        # Presses driven by their own parameters (threshold, sizes): rates do not apply, the kept fraction is measured.
        _press("dms", "DMSPress", "evict entries whose score falls below a threshold (KVzap-style; seed 004); match_rate: "
               "a threshold per sample that meets each rate",
               {"press": "kvzap", "threshold": -6.0, "sliding_window_size": 128, "decoding": True, "match_rate": False}, rate_param=None,
               nested=("press",), aliases=("threshold",), attention="!eager",  # its masking attention fails under eager attention
               traits=replace(_DECODING, wraps="scorer", headwise_mask=True, threshold_param="threshold", own_params=("match_rate",)),
               rules={"threshold": R(kind=float), "sliding_window_size": _NONNEG}, rates_when="match_rate"),
        _press("decoding", "DecodingPress", "compress every N decoding steps to a fixed number of tokens",
               {"base_press": "knorm", "compression_interval": 512, "target_size": 2048, "hidden_states_buffer_size": 256}, rate_param=None,
               nested=("base_press",), traits=_DECODING,
               rules={"compression_interval": _POS, "target_size": _POS, "hidden_states_buffer_size": _NONNEG}),
        _press("cam", "CAMPress", "decoding press that merges evicted values into kept ones (CaM)",
               {"base_press": "knorm", "compression_interval": 512, "target_size": 2048, "hidden_states_buffer_size": 256,
                "merge_budget": 32}, rate_param=None, nested=("base_press",), traits=_DECODING,
               rules={"compression_interval": _POS, "target_size": _POS, "hidden_states_buffer_size": _NONNEG, "merge_budget": _POS}),
        _press("prefill-decoding", "PrefillDecodingPress", "one press for prefill, another for decoding",
               {"prefilling_press": "snapkv", "decoding_press": None}, rate_param=None, nested=("prefilling_press", "decoding_press"),
               traits=replace(_DECODING, wraps=None)),
        _press("per-layer-compression", "PerLayerCompressionPress",
               "an inner press with its own rate per layer (kept_rates: fraction KEPT per layer, one per layer)",
               {"press": "knorm", "kept_rates": None}, rate_param=None, nested=("press",),
               traits=replace(_WRAPPER, forwards_rate=False, kept_lists={"kept_rates": "compression_ratios"}),
               rules={"kept_rates": R(kind=list, item_minimum=0, item_maximum=1)}),
        _press("simlayerkv", "SimLayerKVPress", "keep only initial and recent tokens in 'lazy' layers",
               {"lazy_threshold": 1.0, "n_last": 1, "n_recent": 1024, "n_initial": 4}, rate_param=None,
               traits=PressTraits(per_rate_reason=_NOT_SCORE), rules={"n_last": _POS, "n_recent": _NONNEG, "n_initial": _NONNEG}),
        _press("think", "ThinKPress", "prune key channels (the rate is the fraction of key channels kept)", {"window_size": 32},
               rate_param="key_channel_compression_ratio", traits=PressTraits(per_rate_reason=_NOT_SCORE), rules={"window_size": _POS}),
        _press("duo-attention", "DuoAttentionPress", "streaming heads from learned patterns (the rate is the fraction of heads kept full)",
               {"on_the_fly_scoring": False}, rate_param="head_compression_ratio", needs_hub=_HUB + " (DuoAttention patterns) unless on_the_fly_scoring",
               traits=PressTraits(per_rate_reason=_NOT_SCORE, hub_unless="on_the_fly_scoring")),
        _press("finch", "FinchPress", "question-aware chunked selection (needs a delimiter between context and question)",
               {"chunk_length": None, "normalize_scores": True, "rerotate_keys": True},
               traits=PressTraits(per_rate_reason=_NOT_SCORE, rerotates_keys="rerotate_keys"),
               rules={"chunk_length": R(kind=int, minimum=1, optional=True)}),
        _press("kvzip", "KVzipPress", "reconstruct the context to score entries (several passes)",
               {"layerwise": False, "n_sink": 4, "kvzip_plus_normalization": False, "chunk_size": 2048}, traits=_KVZIP,
               rules={"n_sink": _NONNEG, "chunk_size": _POS}),
        _press("kvgrad", "KVgradPress", "KVzip with gradient-based scores",
               {"layerwise": False, "n_sink": 4, "chunk_size": 512}, traits=_KVZIP,
               rules={"n_sink": _NONNEG, "chunk_size": _POS}),
        _press("restorekv", "RestoreKVPress", "KVzip with a restoration model",
               {"layerwise": False, "n_sink": 4, "kvzip_plus_normalization": False, "chunk_size": 2048},
               needs_hub=_HUB + " (restoration model)", traits=_KVZIP,
               rules={"n_sink": _NONNEG, "chunk_size": _POS}),
        _press("fastkvzip", "FastKVzipPress", "KVzip approximated by learned gates",
               {"layerwise": False, "n_sink": 4, "window_size": 4096, "window_ratio": 0.02},
               needs_hub=_HUB + " (FastKVzip gates)", traits=_KVZIP,
               rules={"n_sink": _NONNEG, "window_size": _POS, "window_ratio": _FRACTION}),
        _press("kvcompose", "KVComposePress", "composite tokens from attention-guided per-head selection",
               {"structured": True, "agg_task": "max", "agg_group": "mean", "agg_head": "mean", "add_v_norm": False,
                "add_mean_across_heads": True, "keep_token_lower_bound": 0}, traits=PressTraits(per_rate_reason=_NOT_SCORE),
               rules={"keep_token_lower_bound": _NONNEG}),
    ]
}


# ---------------------------------------------------------------------------------------------
# Traits of a configured press (its parameters and nested presses taken into account)


@dataclass(frozen=True)
class ResolvedPress:
    """The traits of one configured press, nested presses included: what evaluation code reads."""

    name: str
    traits: PressTraits
    attention: str | None  # "eager" | "sdpa" | "conflict" | None
    hub_reason: str | None
    per_rate_reason: str | None  # None: one prefill serves every rate
    # Traits of the press whose scores the shared path records, and whether it is the wrapped press
    # (a wrapper that shares its inner press's scores) rather than the press itself.
    score_traits: PressTraits
    scores_from_inner: bool
    random: bool
    rerotates_keys: bool
    # The threshold parameter set per sample to meet the rate (a rate-matched threshold press), else None.
    matched_threshold: str | None = None


def _flag(value: bool | str, params: dict) -> bool:
    return bool(params.get(value)) if isinstance(value, str) else bool(value)


def _nested(info: MethodInfo, params: dict) -> list[tuple[str, dict]]:
    """(where, spec) of each nested press given to a wrapper."""
    out = []
    for key in info.nested:
        value = params.get(key)
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(v, dict):
                out.append((f"{key}[{i}]" if isinstance(value, list) else key, v))
    return out


def resolve(name: str, params: dict[str, Any]) -> ResolvedPress:
    """Combine a press's traits with its parameters and its nested presses' traits."""
    info = PRESSES[name]
    t: PressTraits = info.traits
    inner = [resolve(spec["name"], spec["params"]) for _, spec in _nested(info, params)]
    attention = {"eager": "eager", "!eager": "sdpa"}.get(info.attention or "")
    hub = f"{name} {info.needs_hub}" if info.needs_hub and not (t.hub_unless and params.get(t.hub_unless)) else None
    for i in inner:
        if (i.attention == "eager" and attention == "sdpa") or i.attention == "conflict":
            attention = "conflict"
        attention = attention or i.attention
        hub = hub or i.hub_reason
    reason = t.per_rate_reason
    if t.shared_when_set and params.get(t.shared_when_set) is not None:
        reason = None
    from_inner = bool(t.shares_inner_scores and inner)
    if from_inner and (inner[0].per_rate_reason is not None or inner[0].traits.rate_free_score):
        reason = f"inner press {inner[0].name} runs per rate"
    return ResolvedPress(
        name=name, traits=t, attention=attention, hub_reason=hub, per_rate_reason=reason,
        score_traits=inner[0].traits if from_inner else t, scores_from_inner=from_inner,
        random=_flag(t.random, params) or any(i.random for i in inner), rerotates_keys=_flag(t.rerotates_keys, params),
        matched_threshold=t.threshold_param if info.takes_rates(params) and not info.rate_driven else None)


def folders(name: str, params: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """(field, folder) of every local folder a configured press (nested presses included) names."""
    info = PRESSES[name]
    out = [(f"{where}.{key}", params[key]) for key in info.traits.folder_params if params.get(key)]
    for key, spec in _nested(info, params):
        out += folders(spec["name"], spec["params"], f"{where}.{key}.params")
    return out


def check_composition(name: str, params: dict[str, Any], where: str) -> None:
    """Refuse nested presses a wrapper cannot hold (kvpress would assert at run time). Raises ValueError
    naming the field, e.g. ``methods[2].params.press``."""
    info = PRESSES[name]
    t: PressTraits = info.traits
    for key, spec in _nested(info, params):
        inner: PressTraits = PRESSES[spec["name"]].traits
        fits = {"scorer": inner.scorer, "scorer-or-headwise": inner.scorer or inner.shares_inner_scores, None: True}[t.wraps]
        if not fits or spec["name"] in t.refuses_inner:
            scorers = ", ".join(sorted(n for n, p in PRESSES.items() if p.traits.scorer))
            need = f": it wraps a score-based press ({scorers})" if not fits else ""
            raise ValueError(f"{where}.{key}: {name} cannot wrap {spec['name']}{need}")
        check_composition(spec["name"], spec["params"], f"{where}.{key}.params")


def requirements(name: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(attention needed: 'eager'|'sdpa'|'conflict'|None, reason it cannot run offline or None)."""
    r = resolve(name, params)
    return r.attention, r.hub_reason
