"""LLMLingua-2's cut without llmlingua's per-token Python loop: the same output as llmlingua 0.2.2's
``compress_prompt`` (single context, no context-level filter), computed with numpy over whole chunks.

llmlingua spends most of a call outside the classifier: per token it builds Python lists and re-tests
the token's family rules, per word it runs tiktoken, and it repeats all of it for every rate. Here:

- the classifier sees exactly llmlingua's inputs (its chunking, its ``TokenClfDataset`` ids, padded to
  ``max_seq_len``), so its probabilities are bit-for-bit llmlingua's;
- a token's traits (special? begins a word? forced? contains a digit?) are computed once per distinct id;
- a word's GPT (cl100k) token count is computed once per distinct word string (memo);
- word probabilities, thresholds and labels are numpy over the chunk;
- the keep probabilities do not depend on the rate: :meth:`Lingua2Cut.score` runs once, :meth:`cut` per rate;
- several texts can be scored together (their chunks share the classifier's batches).

Exactness notes (why the arithmetic below looks the way it does): llmlingua averages a word's token
probabilities with Python's ``sum`` over numpy float32 scalars (sequential float32 additions; NumPy >= 2's
promotion keeps a forced token's Python ``1.0`` as float32), and hands ``np.percentile`` a Python list whose
dtype is float64 as soon as one element is a Python float (a word forced to 1.0 entirely, or zeroed by
``drop_consecutive``) and float32 otherwise. The same sums, dtypes and percentiles are reproduced here.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_DIGIT = re.compile(r"\d")
_PUNCT = set(string.punctuation)


@dataclass
class _Chunk:
    """One classifier chunk, reduced to its words (rate-independent)."""

    words: list[str]        # llmlingua's words before the XLM-R '▁' strip (what tiktoken counts and the cut joins)
    probs: object           # array in the classifier's dtype: each word's keep probability (forces applied)
    pyfloat: object         # bool array: llmlingua holds this word's probability as a Python float
    forced_word: object     # bool array: the word is one of force_tokens (drop_consecutive)
    oai_counts: object      # int array: GPT tokens of each word


@dataclass
class Scored:
    """One text scored by the classifier: its chunks' words and the text's GPT token count."""

    chunks: list[_Chunk]
    origin_tokens: int
    texts: list[str]        # the chunks' texts (force tokens still replaced by [NEWi]), for rate 1.0
    token_map: dict         # force token -> its [NEWi] stand-in


class Lingua2Cut:
    """LLMLingua-2's post-processing over a loaded llmlingua ``PromptCompressor`` (its tokenizer, classifier,
    special tokens, added ``[NEWi]`` tokens and cl100k encoding), with llmlingua's model-name family rules."""

    def __init__(self, llmlingua_obj, family: str):
        self.obj = llmlingua_obj
        self.family = family  # "bert-base-multilingual-cased" | "xlm-roberta-large"
        self.bert = family == "bert-base-multilingual-cased"
        self._token_memo: dict = {}   # (force key, id) -> traits
        self._oai_memo: dict[str, int] = {}
        self._id_memo: dict[str, int] = {}   # token string -> id (convert_tokens_to_ids)

    # --- llmlingua's preparation of the text -----------------------------------------------------------------

    def _token_map(self, force_tokens):
        tok = self.obj.tokenizer
        return {t: self.obj.added_tokens[i] for i, t in enumerate(force_tokens) if len(tok.tokenize(t)) != 1}

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        """``tokenizer.tokenize`` of each text, in one batched call where the tokenizer is a fast one (the same
        encodings: no special tokens, no truncation, no padding)."""
        tok = self.obj.tokenizer
        if not texts:
            return []
        if getattr(tok, "is_fast", False):
            enc = tok(list(texts), add_special_tokens=False)
            return [enc.tokens(i) for i in range(len(texts))]
        return [tok.tokenize(t) for t in texts]

    def _chunks(self, tokens: list[str], chunk_end_tokens: set) -> list[str]:
        """llmlingua's ``__chunk_context`` over a text's tokens: cut before max_seq_len - 2 tokens, back to the
        last chunk-end token."""
        tok = self.obj.tokenizer
        max_len = self.obj.max_seq_len - 2
        n, st, out = len(tokens), 0, []
        while st < n:
            if st + max_len > n - 1:
                out.append(tok.convert_tokens_to_string(tokens[st:n]))
                break
            ed = st + max_len
            for j in range(ed - st):
                if tokens[ed - j] in chunk_end_tokens:
                    ed = ed - j
                    break
            out.append(tok.convert_tokens_to_string(tokens[st:ed + 1]))
            st = ed + 1
        return out

    def _clf_rows(self, chunks: list[str]) -> list[tuple[list[int], list[bool]]]:
        """llmlingua's ``TokenClfDataset`` rows, unpadded: its BERT-named special tokens for either family (an
        XLM-R vocabulary maps them to <unk>), truncated to max_seq_len; the mask is 'not the string [PAD]'."""
        tok = self.obj.tokenizer
        rows = []
        for tokens in self._tokenize(chunks):
            tokens = (["[CLS]"] + tokens + ["[SEP]"])[:self.obj.max_seq_len]
            missing = [t for t in set(tokens) if t not in self._id_memo]
            if missing:
                self._id_memo.update(zip(missing, tok.convert_tokens_to_ids(missing)))
            rows.append(([self._id_memo[t] for t in tokens], [t != "[PAD]" for t in tokens]))
        return rows

    # --- scoring ---------------------------------------------------------------------------------------------

    def score(self, texts: list[str], force_tokens=(), chunk_end_tokens=(".", "\n"), token_to_word: str = "mean",
              force_reserve_digit: bool = False, batch_size: int | None = None) -> list[Scored]:
        """Run the classifier over every chunk of every text (chunks of several texts share batches of
        ``batch_size``, default llmlingua's ``max_batch_size``) and reduce each chunk to words."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        force_tokens = list(force_tokens)
        token_map = self._token_map(force_tokens)
        ends = list(chunk_end_tokens) + [token_map[c] for c in chunk_end_tokens if c in token_map]
        ends = set(ends)
        oai = self.obj.oai_tokenizer
        per_text, replaced = [], []
        for text in texts:
            origin = len(oai.encode(text))
            for ori, new in token_map.items():
                text = text.replace(ori, new)
            per_text.append(origin)
            replaced.append(text)
        per_text = [(origin, self._chunks(tokens, ends)) for origin, tokens in zip(per_text, self._tokenize(replaced))]
        rows = self._clf_rows([c for _, chunks in per_text for c in chunks])
        size = batch_size or self.obj.max_batch_size
        pad = self.obj.tokenizer.convert_tokens_to_ids("[PAD]")
        seq = self.obj.max_seq_len
        reduced = []
        key = (tuple(force_tokens), tuple(sorted(token_map.items())), force_reserve_digit)
        with torch.no_grad():
            for at in range(0, len(rows), size):
                batch = rows[at:at + size]
                ids = torch.full((len(batch), seq), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), seq), dtype=torch.bool)
                for i, (row, keep) in enumerate(batch):
                    ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
                    mask[i, :len(row)] = torch.tensor(keep, dtype=torch.bool)
                ids, mask = ids.to(self.obj.device), mask.to(self.obj.device)
                probs = F.softmax(self.obj.model(input_ids=ids, attention_mask=mask).logits, dim=-1)[:, :, 1]
                probs, ids_np, mask_np = probs.cpu().numpy(), ids.cpu().numpy(), mask.cpu().numpy()
                for j in range(len(batch)):
                    reduced.append(self._words(ids_np[j][mask_np[j]], probs[j][mask_np[j]], force_tokens, token_map,
                                               key, token_to_word, np))
        out, at = [], 0
        for origin, chunks in per_text:
            out.append(Scored(reduced[at:at + len(chunks)], origin, chunks, token_map))
            at += len(chunks)
        return out

    def _traits(self, token_id: int, token: str, force_tokens, token_map, key, force_reserve_digit):
        """llmlingua's per-token rules (utils.is_begin_of_new_word, get_pure_token, replace_added_token)."""
        memo = self._token_memo.get((key, token_id))
        if memo is not None:
            return memo
        values = set(token_map.values())
        if token in self.obj.special_tokens:
            traits = (True, False, False, False, "", "")
        else:
            if self.bert:
                pure = token.lstrip("##")  # noqa: B005, PLE1310 - llmlingua strips every leading "#"
                begin = pure in force_tokens or pure in values or not token.startswith("##")
            else:
                pure = token.lstrip("▁")
                begin = token in _PUNCT or token in force_tokens or token in values or token.startswith("▁")
            forced = pure in force_tokens or pure in values
            replaced = token
            for ori, new in token_map.items():
                replaced = replaced.replace(new, ori)
            digit = bool(force_reserve_digit and _DIGIT.search(token))
            traits = (False, begin, forced, digit, replaced, pure)
        if len(self._token_memo) > 500_000:
            self._token_memo.clear()
        self._token_memo[(key, token_id)] = traits
        return traits

    def _words(self, ids, probs, force_tokens, token_map, key, token_to_word, np) -> _Chunk:
        """llmlingua's ``__merge_token_to_word`` + ``__token_prob_to_word_prob`` for one chunk, vectorised."""
        tok = self.obj.tokenizer
        force_reserve_digit = key[2]
        uniq, inverse = np.unique(ids, return_inverse=True)
        names = tok.convert_ids_to_tokens(uniq.tolist())
        traits = [self._traits(int(i), t, force_tokens, token_map, key, force_reserve_digit)
                  for i, t in zip(uniq, names)]
        t_special = np.array([t[0] for t in traits], dtype=bool)[inverse]
        keep = ~t_special
        inv = inverse[keep]
        begin = np.array([t[1] for t in traits], dtype=bool)[inv]
        forced = np.array([t[2] for t in traits], dtype=bool)[inv]
        digit = np.array([t[3] for t in traits], dtype=bool)[inv]
        p = probs[keep].copy()  # the classifier's dtype: llmlingua's arithmetic happens in it
        # A begin token's probability is 1.0 when forced; any token's is 1.0 when it holds a digit (if asked).
        one = (begin & forced) | digit
        p[one] = 1.0
        if len(p) and not begin[0]:
            raise IndexError("list index out of range")  # llmlingua appends to a word that does not exist yet
        word_of = np.cumsum(begin) - 1
        n_words = int(begin.sum())
        starts = np.flatnonzero(begin)
        pieces = [traits_r if b else pure for traits_r, pure, b in
                  zip((traits[k][4] for k in inv), (traits[k][5] for k in inv), begin)]
        bounds = list(starts) + [len(pieces)]
        words = ["".join(pieces[bounds[w]:bounds[w + 1]]) for w in range(n_words)]
        lengths = np.diff(np.asarray(bounds))
        if token_to_word == "mean":
            acc = np.zeros(n_words, dtype=p.dtype)
            pos = np.arange(len(p)) - starts[word_of] if len(p) else np.zeros(0, dtype=np.int64)
            for k in range(int(lengths.max()) if n_words else 0):  # sequential float32 sums, as Python's sum does
                sel = pos == k
                acc[word_of[sel]] += p[sel]
            word_probs = acc / lengths.astype(p.dtype)
            one_count = np.bincount(word_of[one], minlength=n_words) if n_words else np.zeros(0, dtype=np.int64)
            pyfloat = one_count == lengths
        elif token_to_word == "first":
            word_probs = p[starts]
            pyfloat = one[starts]
        else:
            raise NotImplementedError()
        forced_word = np.array([w in force_tokens for w in words], dtype=bool)
        counts = np.array([self._oai_count(w) for w in words], dtype=np.int64)
        return _Chunk(words, word_probs, pyfloat, forced_word, counts)

    def _oai_count(self, word: str) -> int:
        n = self._oai_memo.get(word)
        if n is None:
            if len(self._oai_memo) > 500_000:
                self._oai_memo.clear()
            n = self._oai_memo[word] = len(self.obj.oai_tokenizer.encode(word))
        return n

    # --- the cut ---------------------------------------------------------------------------------------------

    def cut(self, scored: Scored, rate: float, drop_consecutive: bool = False, return_word_label: bool = False,
            word_sep: str = "\t\t|\t\t", label_sep: str = " ") -> tuple[dict, list[str], list[int]]:
        """llmlingua's ``compress_prompt`` result for one scored text at ``rate`` (fraction kept), and the
        labelled words (1 = kept) that its ``fn_labeled_original_prompt`` spells out."""
        import numpy as np

        reduce_rate = max(0, 1 - rate)
        tok = self.obj.tokenizer
        texts, all_words, all_labels = [], [], []
        if reduce_rate <= 0:  # llmlingua's rate-1 path: the chunks back as they were, every regex word kept
            for chunk in scored.texts:
                for ori, new in scored.token_map.items():
                    chunk = chunk.replace(new, ori)
                texts.append(chunk)
                words = re.findall(r'\b\w+\b|[<>=/!@#$%^&*()?":{}|\\`~;_+-]', chunk)
                all_words.extend(words)
                all_labels.extend([1] * len(words))
        for ch in (scored.chunks if reduce_rate > 0 else []):
            probs, pyfloat = ch.probs.copy(), ch.pyfloat.copy()
            if drop_consecutive:
                dtype = np.float64 if pyfloat.any() else np.float32
                threshold = np.percentile(probs.astype(dtype), int(100 * reduce_rate))
                zero = _consecutive_forced(ch.words, ch.forced_word, probs.astype(np.float64) > threshold)
                probs[zero] = 0.0
                pyfloat |= zero
            counts = ch.oai_counts
            dtype = np.float64 if (pyfloat & (counts > 0)).any() else np.float32
            threshold = np.percentile(np.repeat(probs.astype(dtype), counts), int(100 * reduce_rate + 1))
            p64 = probs.astype(np.float64)
            above = (p64 > threshold) | ((threshold == 1.0) & (p64 == threshold))
            labels = above.astype(np.int64)
            if drop_consecutive:  # a forced word equal to the previous kept word is dropped
                last = None
                for i in np.flatnonzero(above):
                    if ch.forced_word[i] and last is not None and ch.words[last] == ch.words[i]:
                        labels[i] = 0
                    else:
                        last = i
            keep_words = [ch.words[i] for i in np.flatnonzero(labels)]
            texts.append(tok.convert_tokens_to_string(keep_words))
            all_words.extend(ch.words if self.bert else [w.lstrip("▁") for w in ch.words])
            all_labels.extend(labels.tolist())
        compressed = "".join(texts)
        n_compressed = len(self.obj.oai_tokenizer.encode(compressed))
        n_original = scored.origin_tokens
        saving = (n_original - n_compressed) * 0.06 / 1000
        ratio = 1 if n_compressed == 0 else n_original / n_compressed
        res = {"compressed_prompt": compressed, "compressed_prompt_list": [compressed], "origin_tokens": n_original,
               "compressed_tokens": n_compressed, "ratio": f"{ratio:.1f}x", "rate": f"{1 / ratio * 100:.1f}%",
               "saving": f", Saving ${saving:.1f} in GPT-4."}
        if return_word_label:
            res["fn_labeled_original_prompt"] = word_sep.join(
                f"{w}{label_sep}{label}" for w, label in zip(all_words, all_labels))
        return res, all_words, all_labels


def _consecutive_forced(words, forced, high):
    """llmlingua's drop_consecutive pass: a forced word repeating the previous forced word, with no word above
    the threshold between them, gets probability 0. Returns the zeroed words (bool array)."""
    import numpy as np

    zero = np.zeros(len(words), dtype=bool)
    between, prev = False, None
    for i in np.flatnonzero(forced | high):
        if forced[i]:
            if between:
                between = False
            elif words[i] == prev:
                zero[i] = True
            prev = words[i]
        else:
            between = True
    return zero
