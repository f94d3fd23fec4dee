"""Selective Context (Li et al., 2023): keep the most informative units of a text.

Self-information of a token is -log p(token | preceding tokens) under a causal LM (by default the
evaluated model itself). A unit's self-information is the sum over its tokens (self-information is
additive). Units are tokens, phrases or sentences; the most informative units are kept, in their
original order, until the token budget (rate × tokens) is spent.

Implemented here rather than through the original package (it pins an old spaCy and downloads a
model at run time). Phrases are approximated without a parser: a phrase ends at punctuation and a
new one starts at a function word. The scores do not depend on the rate, so ``compress_rates``
scores once and cuts at every rate.
"""

from __future__ import annotations

import re
import time

from workbench.methods.prompt_base import Compressed, PromptCompressor, dropped_spans
from workbench.methods.prompt_rules import _STOP_WORDS

UNITS = ("token", "phrase", "sentence")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_FUNCTION_WORDS = set(_STOP_WORDS)


class SelectiveContextCompressor(PromptCompressor):
    name = "selective-context"
    shares_scores = True

    def _load(self, evaluated_model) -> None:
        spec = self.params.get("scoring_model", "evaluated")
        if spec in (None, "evaluated"):
            if evaluated_model is None:
                raise ValueError("selective-context scores with the evaluated model, and none was given")
            self.lm = evaluated_model
        else:
            from workbench.models import load_model

            device = getattr(evaluated_model, "device", "auto")
            self.lm = load_model(spec, device=device)
        if self.params.get("unit", "phrase") not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}")

    # -- scoring -----------------------------------------------------------------------------------

    def self_information(self, text: str) -> tuple[list[tuple[int, int]], list[float]]:
        """(character span of each token, its self-information in nats). One forward pass per chunk."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        if not ids:
            return [], []
        chunk = int(self.params.get("chunk_tokens", 1024))
        bos = tok.bos_token_id
        infos = []
        with torch.inference_mode():
            for start in range(0, len(ids), chunk):
                piece = ids[start : start + chunk]
                # A BOS token gives the chunk's first token a context to be predicted from.
                prefix = [bos] if bos is not None else []
                inputs = torch.tensor([prefix + piece], device=model.device)
                logits = model(input_ids=inputs).logits[0].float()
                logp = torch.log_softmax(logits[:-1], dim=-1)  # finite, even for tiny probabilities
                targets = inputs[0, 1:]
                info = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                if not prefix:  # the first token has no prediction: give it the chunk's mean
                    info = torch.cat([info.mean().reshape(1), info])
                infos.append(info)
        # One transfer to the host for the whole text (no per-token synchronisation).
        return offsets, torch.cat(infos).tolist()

    def self_information_many(self, texts: list[str], batch_size: int = 8) -> list[tuple[list, list[float]]]:
        """``self_information`` of several texts, their chunks scored ``batch_size`` at a time: chunks sorted by
        length, right-padded and masked (a causal model's real positions never see the padding), so each
        token's self-information equals the one-at-a-time value up to float rounding (tested to 1e-5)."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        chunk = int(self.params.get("chunk_tokens", 1024))
        bos = tok.bos_token_id
        prefix = [bos] if bos is not None else []
        encoded, pieces = [], []  # pieces: (text index, chunk index, ids)
        for t, text in enumerate(texts):
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"]
            encoded.append(([tuple(o) for o in enc["offset_mapping"]], ids))
            pieces += [(t, k, prefix + ids[start:start + chunk]) for k, start in enumerate(range(0, len(ids), chunk))]
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][2]))
        infos: dict[tuple[int, int], object] = {}
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        with torch.inference_mode():
            for at in range(0, len(order), batch_size):
                group = [pieces[i] for i in order[at:at + batch_size]]
                width = len(group[0][2])
                inputs = torch.full((len(group), width), pad, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for row, (_, _, ids) in enumerate(group):
                    inputs[row, :len(ids)] = torch.tensor(ids)
                    mask[row, :len(ids)] = 1
                inputs, mask = inputs.to(model.device), mask.to(model.device)
                logits = model(input_ids=inputs, attention_mask=mask).logits.float()
                for row, (t, k, ids) in enumerate(group):
                    logp = torch.log_softmax(logits[row, :len(ids) - 1], dim=-1)
                    info = -logp.gather(-1, inputs[row, 1:len(ids)].unsqueeze(-1)).squeeze(-1)
                    if not prefix:
                        info = torch.cat([info.mean().reshape(1), info])
                    infos[(t, k)] = info
        out = []
        for t, (offsets, ids) in enumerate(encoded):
            parts = [infos[(t, k)] for k in range(len(range(0, len(ids), chunk)))]
            out.append((offsets, torch.cat(parts).tolist() if parts else []))
        return out

    # -- units -------------------------------------------------------------------------------------

    def units(self, text: str, offsets: list[tuple[int, int]]) -> list[list[int]]:
        """Token indices grouped into units of the configured kind, in text order."""
        unit = self.params.get("unit", "phrase")
        if unit == "token":
            return [[i] for i in range(len(offsets))]
        groups: list[list[int]] = []
        if unit == "sentence":
            bounds = [m.end() for m in _SENTENCE_END.finditer(text)]
            b = 0
            for i, (start, _) in enumerate(offsets):
                while b < len(bounds) and start >= bounds[b]:
                    b += 1
                    groups.append([])
                if not groups:
                    groups.append([])
                groups[-1].append(i)
            return [g for g in groups if g]
        for i, (start, end) in enumerate(offsets):  # phrases
            piece = text[start:end]
            word = piece.strip().lower()
            new_phrase = not groups or word in _FUNCTION_WORDS or (i > 0 and re.search(r"[.,;:!?()\n]", text[offsets[i - 1][0]:start] + piece[:1]))
            if new_phrase:
                groups.append([])
            groups[-1].append(i)
        return groups

    # -- selection ---------------------------------------------------------------------------------

    def compress_rates(self, text, rates, question=None):
        start = time.perf_counter()
        offsets, infos = self.self_information(text)
        return self._select_rates(text, offsets, infos, time.perf_counter() - start, rates)

    def _select_rates(self, text, offsets, infos, scoring: float, rates) -> dict:
        """{rate: result} from one scoring of ``text``; each rate carries an equal share of the ``scoring`` seconds,
        plus its own selection."""
        groups = self.units(text, offsets)
        out = {}
        for rate in rates:
            t0 = time.perf_counter()
            result = self._select(text, offsets, infos, groups, rate)
            result.seconds = scoring / len(rates) + time.perf_counter() - t0
            out[rate] = result
        return out

    def compress_many(self, texts, rates, batch_size: int = 8):
        """Several texts at every rate, their scoring chunks batched (``self_information_many``); each rate's
        ``seconds`` carries an equal share of the text's share (1/len(texts)) of the batched scoring time."""
        start = time.perf_counter()
        scored = self.self_information_many(list(texts), batch_size)
        scoring = (time.perf_counter() - start) / max(1, len(texts))
        return [self._select_rates(text, offsets, infos, scoring, rates) for text, (offsets, infos) in zip(texts, scored)]

    def _compress(self, text, rate, question):
        offsets, infos = self.self_information(text)
        return self._select(text, offsets, infos, self.units(text, offsets), rate)

    @staticmethod
    def _select(text, offsets, infos, groups, rate) -> Compressed:
        budget = rate * len(offsets)
        ranked = sorted(range(len(groups)), key=lambda g: (-sum(infos[i] for i in groups[g]), g))
        chosen, spent = set(), 0
        for g in ranked:
            cost = len(groups[g])
            if spent + cost <= budget or not chosen:
                chosen.add(g)
                spent += cost
            if spent >= budget:
                break
        kept_tokens = sorted(i for g in chosen for i in groups[g])
        kept_set = set(kept_tokens)
        spans: list[list[int]] = []
        for i in kept_tokens:  # merge runs of adjacent tokens into contiguous character spans
            a, b = offsets[i]
            if spans and (i - 1) in kept_set and not text[spans[-1][1]:a].strip():
                spans[-1][1] = b
            else:
                spans.append([a, b])
        kept = [(a, b) for a, b in spans]
        compressed = " ".join(text[a:b].strip() for a, b in kept)
        return Compressed(compressed, dropped_spans(text, kept), own={"units": len(groups), "units_kept": len(chosen)})

