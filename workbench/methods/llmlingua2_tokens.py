"""Facts about the classifier's tokenizer that let the workbench's LLMLingua-2 cut skip work llmlingua does,
with the output unchanged: its ``tokenize`` is one ``encode_batch`` of the backend, and (for a BERT WordPiece
pipeline) decoding a chunk's tokens and tokenizing the text again gives the same tokens."""

from __future__ import annotations

import re


def tokenize_is_backend_encode(tok) -> bool:
    """Whether ``tok.tokenize`` is transformers' own fast-tokenizer ``tokenize`` (one ``encode_batch`` of the
    backend, no special tokens), not a slow tokenizer's or an override."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return False
    return (isinstance(tok, PreTrainedTokenizerFast) and getattr(type(tok), "tokenize", None)
            is PreTrainedTokenizerFast.tokenize and hasattr(tok, "_tokenizer")
            and hasattr(tok, "set_truncation_and_padding") and hasattr(tok, "split_special_tokens"))


def wordpiece_round_trip(tok) -> bool:
    """Whether decoding a chunk's tokens and tokenizing the text again gives the same tokens, for every chunk
    whose first token begins a word: true of a BERT WordPiece pipeline as the official LLMLingua-2 checkpoint
    has it, by these steps (and what each check below rules out):

    - the decoder (``decoders.WordPiece``, prefix '##') joins a word's pieces, puts one space before every other
      token and, with ``cleanup``, removes it again only before a token '.', '?', '!' or ',' (its clean-up
      applies to one token at a time: " do not" or " n't" never reach it as one string);
    - the pre-tokenizer (``BertPreTokenizer``) splits at whitespace and isolates every punctuation character,
      so that text splits into exactly the original pre-tokens, each a word whose pieces were the tokens;
    - the normaliser (``BertNormalizer`` without lowercasing or accent stripping) maps the already normalised
      characters to themselves;
    - ``WordPiece`` (greedy longest match first) gives a word its pieces again, and a word cut at the chunk's
      end (its first pieces) the same first pieces; a word it could not split is '[UNK]', matched as such;
    - added tokens are bracketed names ('[CLS]', llmlingua's '[NEW0]'), matched in the text as tokens: the
      decoded text holds one only where a token was one ('[' is always followed by a space there), and special
      tokens are not split (``split_special_tokens`` off).

    A chunk that starts inside a word (its first token '##...') is decoded and tokenized again. The identity
    tests compare the result with llmlingua's own on texts that exercise each case."""
    try:
        from tokenizers import decoders, models, normalizers, pre_tokenizers
    except ImportError:
        return False
    backend = getattr(tok, "_tokenizer", None)
    if backend is None or getattr(tok, "split_special_tokens", True):
        return False
    from transformers import PreTrainedTokenizerFast

    if getattr(type(tok), "convert_tokens_to_string", None) is not PreTrainedTokenizerFast.convert_tokens_to_string:
        return False
    norm, pre, model, dec = backend.normalizer, backend.pre_tokenizer, backend.model, backend.decoder
    return (isinstance(norm, normalizers.BertNormalizer) and not norm.lowercase and not norm.strip_accents
            and isinstance(pre, pre_tokenizers.BertPreTokenizer)
            and isinstance(model, models.WordPiece) and model.continuing_subword_prefix == "##"
            and isinstance(dec, decoders.WordPiece) and dec.prefix == "##"
            and all(re.fullmatch(r"\[\w+\]", t.content) for t in backend.get_added_tokens_decoder().values())
            and model.unk_token in {t.content for t in backend.get_added_tokens_decoder().values()}
            # the installed decoder cleans up one token at a time (a whole-string clean-up would join these)
            and (not dec.cleanup or dec.decode(["I", "do", "not", "n", "'", "t", "a", ","]) == "I do not n ' t a,"))
