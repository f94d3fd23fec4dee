"""LLMLingua-2's cut without llmlingua's per-token Python loop: the same output as llmlingua 0.2.2's
``compress_prompt`` (single context, no context-level filter), computed with numpy over whole chunks.

llmlingua spends most of a call outside the classifier: per token it builds Python lists and re-tests
the token's family rules, per word it runs tiktoken, and it repeats all of it for every rate. Here:

- the classifier sees exactly llmlingua's inputs (its chunking, its ``TokenClfDataset`` ids, padded to
  ``max_seq_len``), so its probabilities are bit-for-bit llmlingua's; llmlingua decodes each chunk and
  tokenizes it again for those ids, which is skipped where it provably returns the chunk's own tokens
  (``llmlingua2_tokens``);
- a chunk's words are its pieces joined in one string and split at word starts (no join per word);
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
from itertools import compress

from workbench.methods.llmlingua2_tokens import (
    tokenize_is_backend_encode,
    wordpiece_round_trip,
)

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
    shown: list[str]        # the words as llmlingua's word labels spell them (XLM-R: leading '▁' stripped)


@dataclass
class Scored:
    """One text scored by the classifier: its chunks' words and the text's GPT token count."""

    chunks: list[_Chunk]
    origin_tokens: int
    chunk_tokens: list      # each chunk's tokens (force tokens still replaced by [NEWi]); decoded for rate 1.0
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
        self._backend_tokenize: bool | None = None  # tokenize == the backend's encode_batch (decided on first use)
        self._round_trip: bool | None = None  # decode + tokenize gives a chunk's tokens back (see _chunk_tokens)

    # --- llmlingua's preparation of the text -----------------------------------------------------------------

    def _token_map(self, force_tokens):
        tok = self.obj.tokenizer
        return {t: self.obj.added_tokens[i] for i, t in enumerate(force_tokens) if len(tok.tokenize(t)) != 1}

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        """``tokenizer.tokenize`` of each text. For a transformers fast tokenizer whose ``tokenize`` is the library's
        own, one call of the backend's ``encode_batch`` with what that ``tokenize`` sets first (no truncation, no
        padding, no special tokens added, its special-token splitting): the same encodings without building a
        BatchEncoding per call."""
        tok = self.obj.tokenizer
        if not texts:
            return []
        if self._backend_tokenize is None:
            self._backend_tokenize = tokenize_is_backend_encode(tok)
        if not self._backend_tokenize:
            return [tok.tokenize(t) for t in texts]
        from transformers.tokenization_utils_base import (
            PaddingStrategy,
            TruncationStrategy,
        )

        tok.set_truncation_and_padding(PaddingStrategy.DO_NOT_PAD, TruncationStrategy.DO_NOT_TRUNCATE, None, 0, None,
                                       None)
        backend = tok._tokenizer
        if backend.encode_special_tokens != tok.split_special_tokens:
            backend.encode_special_tokens = tok.split_special_tokens
        return [e.tokens for e in backend.encode_batch(list(texts), add_special_tokens=False)]

    def _chunks(self, tokens: list[str], chunk_end_tokens: set) -> list[list[str]]:
        """llmlingua's ``__chunk_context`` over a text's tokens: cut before max_seq_len - 2 tokens, back to the
        last chunk-end token. Returns the chunks' tokens; llmlingua decodes each (:meth:`_chunk_text`) and tokenizes
        the decoded text again for the classifier (:meth:`_chunk_rows`)."""
        max_len = self.obj.max_seq_len - 2
        n, st, out = len(tokens), 0, []
        while st < n:
            if st + max_len > n - 1:
                out.append(tokens[st:n])
                break
            ed = st + max_len
            for j in range(ed - st):
                if tokens[ed - j] in chunk_end_tokens:
                    ed = ed - j
                    break
            out.append(tokens[st:ed + 1])
            st = ed + 1
        return out

    def _chunk_text(self, tokens: list[str]) -> str:
        return self.obj.tokenizer.convert_tokens_to_string(tokens)

    def _chunk_tokens(self, chunks: list[list[str]]) -> list[list[str]]:
        """What llmlingua's classifier rows tokenize: each chunk decoded and tokenized again. Where that provably
        gives the chunk's own tokens back (:func:`wordpiece_round_trip`), they are used as they are."""
        if self._round_trip is None:
            if self._backend_tokenize is None:
                self._backend_tokenize = tokenize_is_backend_encode(self.obj.tokenizer)
            self._round_trip = self._backend_tokenize and wordpiece_round_trip(self.obj.tokenizer)
        again = [i for i, c in enumerate(chunks) if not (self._round_trip and c and not c[0].startswith("##"))]
        out = list(chunks)
        for i, tokens in zip(again, self._tokenize([self._chunk_text(chunks[i]) for i in again])):
            out[i] = tokens
        return out

    def _clf_rows(self, chunks: list[list[str]]) -> list[tuple[list[int], list[bool] | None]]:
        """llmlingua's ``TokenClfDataset`` rows, unpadded: its BERT-named special tokens for either family (an
        XLM-R vocabulary maps them to <unk>), truncated to max_seq_len; the mask is 'not the string [PAD]' (None:
        no token of the row is, every one counts)."""
        tok = self.obj.tokenizer
        memo, rows = self._id_memo, []
        for tokens in self._chunk_tokens(chunks):
            tokens = (["[CLS]"] + tokens + ["[SEP]"])[:self.obj.max_seq_len]
            missing = set(tokens).difference(memo)
            if missing:
                missing = list(missing)
                memo.update(zip(missing, tok.convert_tokens_to_ids(missing)))
            ids = list(map(memo.__getitem__, tokens))  # convert_tokens_to_ids, one dict look-up a token
            rows.append((ids, [t != "[PAD]" for t in tokens] if "[PAD]" in tokens else None))
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
                ids_np = np.full((len(batch), seq), pad, dtype=np.int64)
                mask_np = np.zeros((len(batch), seq), dtype=bool)
                for i, (row, keep) in enumerate(batch):
                    ids_np[i, :len(row)] = row
                    mask_np[i, :len(row)] = True if keep is None else keep
                ids = torch.from_numpy(ids_np).to(self.obj.device)
                mask = torch.from_numpy(mask_np).to(self.obj.device)
                probs = F.softmax(self.obj.model(input_ids=ids, attention_mask=mask).logits, dim=-1)[:, :, 1]
                probs = probs.cpu().numpy()
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
            traits = (True, False, False, False, "", "", "")
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
            traits = (False, begin, forced, digit, replaced, pure, replaced.lstrip("▁"))
        if len(self._token_memo) > 500_000:
            self._token_memo.clear()
        self._token_memo[(key, token_id)] = traits
        return traits

    def _words(self, ids, probs, force_tokens, token_map, key, token_to_word, np) -> _Chunk:
        """llmlingua's ``__merge_token_to_word`` + ``__token_prob_to_word_prob`` for one chunk, vectorised."""
        tok = self.obj.tokenizer
        force_reserve_digit = key[2]
        uniq, inverse = np.unique(ids, return_inverse=True)
        uniq = uniq.tolist()
        traits = [self._token_memo.get((key, i)) for i in uniq]
        if None in traits:  # token strings only for ids not seen with these options yet
            missing = [i for i, t in zip(uniq, traits) if t is None]
            found = dict(zip(missing, tok.convert_ids_to_tokens(missing)))
            traits = [t if t is not None else
                      self._traits(i, found[i], force_tokens, token_map, key, force_reserve_digit)
                      for i, t in zip(uniq, traits)]
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
        words = _join_pieces(traits, inv, begin, 4, np)
        # XLM-R words lose their leading '▁' in the word labels. A continuation piece never starts with '▁' (it
        # would begin a word), so stripping a word is stripping its first piece.
        shown = words if self.bert else _join_pieces(traits, inv, begin, 6, np)
        lengths = np.diff(np.append(starts, len(p)))
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
        force_set = set(force_tokens)
        forced_word = np.fromiter(map(force_set.__contains__, words), dtype=bool, count=n_words)
        counts = list(map(self._oai_memo.get, words))
        if None in counts:
            counts = [self._oai_count(w) if c is None else c for w, c in zip(words, counts)]
        return _Chunk(words, word_probs, pyfloat, forced_word, np.asarray(counts, dtype=np.int64), shown)

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
            for chunk in map(self._chunk_text, scored.chunk_tokens):
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
            labels = labels.tolist()
            texts.append(tok.convert_tokens_to_string(list(compress(ch.words, labels))))
            all_words.extend(ch.shown)
            all_labels.extend(labels)
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


_WORD_START = "\x00"  # marks where a word begins while a chunk's pieces are joined in one string


def _join_pieces(traits, inv, begin, field: int, np) -> list[str]:
    """A chunk's words: its (non-special) tokens' pieces in order, a word starting at each begin token; the
    begin piece is ``traits[...][field]``, a continuation piece the token's pure form. Joined in one string with
    a marker before each word and split there (one pass in C instead of one join per word); a piece holding
    the marker itself makes the count differ, and then the words are joined one by one."""
    table = np.array([_WORD_START + t[field] if t[1] else t[5] for t in traits] + [""], dtype=object)
    pieces = table[inv]
    words = "".join(pieces).split(_WORD_START)[1:]
    if len(words) == int(begin.sum()):
        return words
    bounds = np.append(np.flatnonzero(begin), len(inv))
    plain = [p[1:] if b else p for p, b in zip(pieces.tolist(), begin.tolist())]
    return ["".join(plain[bounds[w]:bounds[w + 1]]) for w in range(len(bounds) - 1)]


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
