"""Greedy decoding with the cache compressed at a schedule's points (torch).

One token at a time: after token t + 1 is chosen and before it is fed, the schedule is asked about a point after
token t (``schedule.Step``); at a point every layer's cache is cut to the target by a score-based press's scores
(kvpress's ``ScorerPress.score``, as its ``DecodingPress`` does between steps: the scores of the keys, values and
the last hidden states entering that layer's attention). Kept entries stay in their order, so position-based
scores (StreamingLLM's recency) still read the cache as a sequence. Positions keep counting the tokens *seen*,
not the tokens held.

``forced`` tokens teacher-force the continuation instead of choosing it (the self-continuation perplexity: the
uncompressed model's greedy tokens scored through the compressing cache); their NLL is summed either way.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from workbench import kv_eval, kv_room
from workbench.decoding import curve as curves
from workbench.decoding.schedule import Schedule, Step

HIDDEN_BUFFER = 64  # hidden states kept per layer for the press's scores, at least (kvpress's DecodingPress keeps 256)
LIVE_INTERVAL = 0.2  # seconds between live budget reports


@dataclass
class Target:
    """How much a point keeps: ``rate`` of the tokens seen so far, or a fixed ``budget`` of tokens per layer."""

    rate: float | None = None
    budget: int | None = None

    def tokens(self, seen: int) -> int:
        if self.budget is not None:
            return self.budget
        return kv_eval.compute_n_kept(seen, kv_eval.compression_ratio(self.rate))


class Evictor:
    """Cuts each layer's cache to the target with a score-based press, between forward passes. While its hooks are
    held it keeps, per layer, the last ``buffer`` hidden states entering attention (for a press with a query window
    with their rotary position embeddings: its queries need their own positions, not only the last token's), and
    that forward's other kwargs, which the press's ``score`` reads. What else a press needs there is on its registry entry
    (``traits``, a ``PressTraits``): a query window, where its future queries start, a per-layer budget, a rate-free
    score."""

    def __init__(self, model, press, target: Target, traits=None):
        from workbench.methods.presses import PressTraits

        self.model, self.press, self.target = model, press, target
        self.traits = traits if traits is not None else PressTraits(scorer=True)
        self.score = kv_eval.score_function(self.traits, press)  # StreamingLLM's own score needs the rate
        self.modules = kv_eval.attention_modules(model)
        window = getattr(press, self.traits.query_window) if self.traits.query_window else 0
        self.buffer = max(HIDDEN_BUFFER, window + 1)  # the window's queries, and the one more SnapKV asserts
        self.hidden: dict[int, torch.Tensor] = {}
        self.rope: dict[int, tuple] = {}
        self.kwargs: dict[int, dict] = {}
        # Per layer: how many of the cache's last entries are the latest tokens seen, in order (a query window
        # must not reach past them: its causal mask reads the window's queries as the last keys).
        self.recent: dict[int, int] = {}
        press.post_init_from_model(model)

    @classmethod
    def for_press(cls, model, name: str, params: dict, target: Target) -> Evictor:
        """The registry's press ``name`` with resolved ``params``, with its entry's traits."""
        from workbench.methods.press_build import build_press
        from workbench.methods.presses import PRESSES

        return cls(model, build_press(name, params, None), target, PRESSES[name].traits)

    @contextmanager
    def hooks(self):
        def remember(module, args, kwargs):
            i = module.layer_idx
            h = kwargs["hidden_states"]
            rope = kwargs.get("position_embeddings") if self.traits.query_window else None  # else the last suffice
            if i in self.hidden:
                h = torch.cat([self.hidden[i], h], dim=1)
                if rope is not None:
                    rope = tuple(torch.cat([old, new], dim=1) for old, new in zip(self.rope[i], rope))
            self.hidden[i] = h[:, -self.buffer:]
            if rope is not None:
                self.rope[i] = tuple(r[:, -self.buffer:] for r in rope)
            self.recent[i] = self.recent.get(i, 0) + kwargs["hidden_states"].shape[1]
            self.kwargs[i] = kwargs

        for state in (self.hidden, self.rope, self.kwargs, self.recent):
            state.clear()  # a new generation starts with its prefill
        handles = [m.register_forward_pre_hook(remember, with_kwargs=True) for m in self.modules]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def compress(self, cache, seen: int) -> None:
        """Cut every layer to the target for ``seen`` tokens seen (or the press's own budget for that layer)."""
        n = self.target.tokens(seen)
        for i, layer in enumerate(cache.layers):
            module, k_len = self.modules[i], layer.keys.shape[2]
            n_layer = self._layer_budget(module, n, seen)
            if k_len <= n_layer:
                continue
            kwargs = {**self.kwargs[i], **({"position_embeddings": self.rope[i]} if i in self.rope else {})}
            with self._scoring(i, seen, k_len):
                scores = self.score(module, self.hidden[i], layer.keys, layer.values, None, kwargs)
            kept = scores.topk(n_layer, dim=-1).indices.sort(dim=-1).values
            layer.keys, layer.values = kv_eval.keep_entries(layer.keys, layer.values, kept)
            self.recent[i] = _latest_kept(kept, k_len, self.recent[i])

    def _layer_budget(self, module, n: int, seen: int) -> int:
        """``n``, or where the press sets a budget per layer, its budget for this layer at the fraction n / seen
        (the layers then hold n on average); get_layer_budget reads the ratio off the press, as in a prefill."""
        if not self.traits.layer_budget or n >= seen:
            return n
        ratio = self.press.compression_ratio
        self.press.compression_ratio = 1.0 - n / seen
        try:
            return self.press.get_layer_budget(module, seen)
        finally:
            self.press.compression_ratio = ratio

    @contextmanager
    def _scoring(self, i: int, seen: int, k_len: int):
        """The press as it must score layer ``i`` between steps: its query window narrowed to the latest tokens held
        (and buffered), its future queries starting at the tokens seen."""
        from workbench.methods import press_scores

        with ExitStack() as stack:
            name = self.traits.query_window
            if name:
                full = getattr(self.press, name)
                setattr(self.press, name, max(1, min(full, self.hidden[i].shape[1] - 1, self.recent[i], k_len - 1)))
                stack.callback(setattr, self.press, name, full)
            if self.traits.future_positions:
                stack.enter_context(press_scores.future_from(self.press, self.traits.future_positions, seen))
            yield


def _latest_kept(kept: torch.Tensor, k_len: int, recent: int) -> int:
    """How many of the last entries ``kept`` (sorted (B, H, n) indices into ``k_len`` entries) are the cache's
    latest ``recent`` in every head: the latest tokens still held, in order, after the cut."""
    m = min(kept.shape[-1], recent)
    if m == 0:
        return 0
    same = (kept[..., -m:] == torch.arange(k_len - m, k_len, device=kept.device)).flatten(0, -2).all(dim=0)
    missing = (~same).nonzero()
    return m if missing.numel() == 0 else m - 1 - int(missing[-1])


@dataclass
class Decoded:
    tokens: list[int]
    text: str
    points: list[int] = field(default_factory=list)  # t: compressed right after generated token t
    chars: list[int] = field(default_factory=list)  # len(text through t) of each point
    curve: list[list] = field(default_factory=list)  # curve.row()s
    point_layers: list[list[int]] = field(default_factory=list)  # per-layer tokens kept after each point
    nll_sum: float = 0.0  # NLL (nats) of the tokens fed or chosen, each given the (compressed) cache before it
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0  # the steps after the prefill
    cache: object = None
    seen: int = 0  # tokens the cache has seen: the prompt and the generated tokens fed


def _sizes(cache) -> list[int]:
    return [layer.keys.shape[-2] for layer in cache.layers]


def _nll(logits: torch.Tensor, token: int) -> float:
    return float(kv_eval.token_nlls(logits.view(1, 1, -1), torch.tensor([[token]], device=logits.device))[0, 0])


def decode(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, eos_ids: set[int], schedule: Schedule | None = None,
           evictor: Evictor | None = None, forced: list[int] | None = None, seed: int = 0, on_curve=None,
           temperature: float = 0.0) -> Decoded:
    """Prefill ``prompt_ids``, then generate up to ``max_new_tokens`` greedily (stopping at an EOS token) — or
    sampled at ``temperature`` > 0 from a generator seeded with ``seed`` (a rerun draws the same) — or feed
    ``forced`` (all of them), compressing at ``schedule``'s points with ``evictor``. ``on_curve(rows)`` sees the
    budget curve so far a few times a second."""
    device = model.device
    c = len(prompt_ids)
    limit = len(forced) if forced is not None else max_new_tokens
    hidden_layer = schedule.hidden_layer if schedule is not None else None
    if schedule is not None:
        schedule.start(seed)
    out = Decoded(tokens=[], text="")
    if limit <= 0:
        return out
    # Room for every token to come: a step writes its entries in place instead of concatenating the whole cache (an
    # eviction point replaces the tensors; the next step starts a new buffer with the room again, see kv_room).
    cache = kv_room.roomy_cache(limit)
    gen = out.tokens
    draw = None
    if temperature > 0 and forced is None:
        generator = torch.Generator(device=device).manual_seed(seed)

        def draw(logits):
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            return int(torch.multinomial(probs, 1, generator=generator))

    def choose(logits) -> int:
        return int(logits.argmax()) if draw is None else draw(logits)

    last_report = time.monotonic()
    with torch.inference_mode(), (evictor.hooks() if evictor is not None else nullcontext()):
        kv_eval._sync(model)
        start = time.perf_counter()
        logits = model(input_ids=torch.tensor([prompt_ids], device=device), past_key_values=cache, use_cache=True,
                       logits_to_keep=1).logits[0, -1]
        kv_eval._sync(model)
        out.prefill_seconds = time.perf_counter() - start
        start = time.perf_counter()
        token = forced[0] if forced is not None else choose(logits)
        if forced is None and token in eos_ids:
            return out
        out.nll_sum += _nll(logits, token)
        gen.append(token)
        fed = -1  # the last generated token fed to the model (the last one chosen is never fed)
        while len(gen) < limit:
            t = fed = len(gen) - 1
            step_out = model(input_ids=torch.tensor([[gen[t]]], device=device), past_key_values=cache,
                             position_ids=torch.tensor([[c + t]], device=device), use_cache=True, logits_to_keep=1,
                             output_hidden_states=hidden_layer is not None)
            logits = step_out.logits[0, -1]
            if t == 0:
                out.curve.append(curves.row(0, _sizes(cache)))
            token = forced[t + 1] if forced is not None else choose(logits)
            if forced is None and token in eos_ids:
                break
            if schedule is not None:
                text = tokenizer.decode(gen, skip_special_tokens=True)
                hidden = step_out.hidden_states[hidden_layer][0, -1] if hidden_layer is not None else None
                if schedule.is_point(Step(index=t, position=c + t, text=text, next_text=tokenizer.decode([token]), hidden=hidden)):
                    out.points.append(t)
                    out.chars.append(len(text))
                    if t > 0:
                        out.curve.append(curves.row(t, _sizes(cache)))
                    if evictor is not None:
                        evictor.compress(cache, seen=c + t + 1)
                    sizes = _sizes(cache)
                    out.curve.append(curves.row(t, sizes))
                    out.point_layers.append(sizes)
            out.nll_sum += _nll(logits, token)
            gen.append(token)
            if on_curve is not None and time.monotonic() - last_report >= LIVE_INTERVAL:
                last_report = time.monotonic()
                on_curve(out.curve + [curves.row(t, _sizes(cache))])
        kv_eval._sync(model)
        out.decode_seconds = time.perf_counter() - start
    if fed >= 0 and out.curve[-1][0] != fed:
        out.curve.append(curves.row(fed, _sizes(cache)))
    out.text = tokenizer.decode(gen, skip_special_tokens=True)
    out.cache, out.seen = cache, c + fed + 1
    if on_curve is not None:
        on_curve(out.curve)
    return out
