"""The workbench's own LLMLingua-2 cut (workbench.methods.llmlingua2_fast) against llmlingua 0.2.2's
``compress_prompt`` on the same loaded classifier: identical result dicts (compressed text, word labels, GPT token
counts) over many texts, rates and every option the workbench exposes, for tiny random classifiers of both
tokenizer families; and batched scoring (several texts per forward pass) gives what one text at a time gives."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from test_llmlingua import _tiny_bert, _tiny_xlm_roberta, offline  # noqa: F401 - offline is an autouse fixture

pytest.importorskip("llmlingua")

RATES = (0.1, 0.25, 0.33, 0.5, 0.7, 0.9, 1.0)


def _texts() -> list[str]:
    """WikiText-2 test lines of very different lengths, a few joined into texts longer than one 512-token chunk,
    plus lines with digits, newlines and question marks (force tokens, chunk ends, force_reserve_digit)."""
    lines = (REPO_ROOT / "workbench" / "data" / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
    body = [line.strip() for line in lines if len(line.split()) >= 20][:40]
    short = [line.strip() for line in lines if 3 <= len(line.split()) < 20][:4]
    joined = ["\n".join(body[i:i + 6]) for i in (0, 6)]  # ~900+ words: several chunks, cut at '.' or '\n'
    asked = [body[12] + " Who was it ? In 1998 , 2 of 3 ? ? \n\n" + body[13]]
    # What a tokenizer's clean-up could change when a chunk is decoded: " do not", " n't", " 's", " ," ...
    spoken = ["I do not know , he said . They did n't go , did they ? It 's theirs ! don ' t , do n ' t .'"]
    # No chunk end in 600 tokens: the first chunk ends inside a word, the second starts with a '##' piece
    # ("00000000" is the first long word of the vocabulary, split by _tiny_bert into "0000" "##0000").
    unbroken = ["00000000 " * 300]
    return body[:8] + short + joined + asked + spoken + unbroken


@pytest.fixture(scope="module")
def texts():
    return _texts()


def _load(tmp_path_factory, family, texts, implementation="llmlingua", **params):
    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor

    build = _tiny_bert if family.startswith("bert") else _tiny_xlm_roberta
    folder = tmp_path_factory.mktemp(f"clf-{family}") / "model"
    build(folder, "\n".join(texts))
    compressor = LLMLingua2Compressor(str(folder), device="cpu", implementation=implementation, **params)
    compressor.load()
    return compressor


@pytest.fixture(scope="module", params=["bert-base-multilingual-cased", "xlm-roberta-large"])
def reference(request, tmp_path_factory, texts):
    return _load(tmp_path_factory, request.param, texts)


OPTIONS = [
    {},
    {"force_tokens": ["\n", "?", ".", ","]},
    {"force_tokens": ["\n", "?", ","], "drop_consecutive": True},
    {"force_reserve_digit": True, "token_to_word": "first"},
    {"force_tokens": ["?", "the"], "force_reserve_digit": True, "chunk_end_tokens": [","]},
    {"token_to_word": "first", "force_tokens": ["\n"], "drop_consecutive": True},
]


def _theirs(reference, text, rate, options):
    kwargs = dict(options)
    return reference.llmlingua.compress_prompt(
        [text], rate=rate, use_context_level_filter=False, return_word_label=True, word_sep="\x1e", label_sep="\x1f",
        **kwargs)


def _ours(cutter, text, rate, options):
    score = {k: options[k] for k in ("force_tokens", "chunk_end_tokens", "token_to_word", "force_reserve_digit")
             if k in options}
    (scored,) = cutter.score([text], **score)
    result, _, _ = cutter.cut(scored, rate, drop_consecutive=options.get("drop_consecutive", False),
                              return_word_label=True, word_sep="\x1e", label_sep="\x1f")
    return result


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(sorted(o)) or "defaults")
def test_own_cut_is_identical_to_llmlingua(reference, texts, options):
    from workbench.methods.llmlingua2_fast import Lingua2Cut

    cutter = Lingua2Cut(reference.llmlingua, reference.family)
    compared = 0
    for text in texts:
        for rate in RATES:
            expected = _theirs(reference, text, rate, options)
            got = _ours(cutter, text, rate, options)
            assert got == expected, (reference.family, options, rate, text[:60])
            compared += 1
    assert compared == len(texts) * len(RATES)


def test_long_texts_are_chunked_like_llmlingua(reference, texts):
    from workbench.methods.llmlingua2_fast import Lingua2Cut

    cutter = Lingua2Cut(reference.llmlingua, reference.family)
    long = max(texts, key=len)
    (scored,) = cutter.score([long])
    assert len(scored.chunks) >= 2  # the comparison above covers more than one classifier chunk


def test_chunks_that_decode_to_their_own_tokens_skip_the_second_tokenization(reference, texts):
    """For the BERT WordPiece pipeline a chunk's tokens are used as they are (proved in llmlingua2_tokens.wordpiece_round_trip),
    except a chunk that starts inside a word; the texts above include one (so the identity tests cover both), and
    for every chunk the tokens used equal what decoding and tokenizing again gives."""
    from workbench.methods.llmlingua2_fast import Lingua2Cut

    cutter = Lingua2Cut(reference.llmlingua, reference.family)
    tok = reference.llmlingua.tokenizer
    chunks = [c for text in texts for c in cutter.score([text])[0].chunk_tokens]
    used = cutter._chunk_tokens(chunks)
    assert cutter._round_trip is reference.family.startswith("bert")
    assert used == [tok.tokenize(tok.convert_tokens_to_string(c)) for c in chunks]
    if cutter._round_trip:
        assert any(c[0].startswith("##") for c in chunks)  # the chunk that is tokenized again
        assert sum(u is c for u, c in zip(used, chunks)) >= len(chunks) - 1


def test_batched_scoring_equals_one_text_at_a_time(reference, texts):
    """Chunks of several texts in one forward pass (padding masked): the same words, probabilities and cuts."""
    import numpy as np

    from workbench.methods.llmlingua2_fast import Lingua2Cut

    cutter = Lingua2Cut(reference.llmlingua, reference.family)
    options = {"force_tokens": ["\n", "?"]}
    together = cutter.score(texts, batch_size=8, **options)
    for text, batched in zip(texts, together):
        (alone,) = cutter.score([text], **options)
        assert [c.words for c in alone.chunks] == [c.words for c in batched.chunks]
        for a, b in zip(alone.chunks, batched.chunks):
            np.testing.assert_array_equal(a.probs, b.probs)
        for rate in (0.3, 0.6):
            assert cutter.cut(alone, rate)[0] == cutter.cut(batched, rate)[0]


@pytest.mark.parametrize("family", ["bert-base-multilingual-cased", "xlm-roberta-large"])
def test_compressor_paths_agree_and_ours_scores_once(tmp_path_factory, texts, family):
    """The registry's LLMLingua-2 with implementation='workbench' (default) and 'llmlingua' give the same
    Compressed (text, dropped spans, llmlingua's figures) per rate; ours runs the classifier once for all rates."""
    ours = _load(tmp_path_factory, family, texts, implementation="workbench", force_tokens=["\n", "?"])
    theirs = _load(tmp_path_factory, family, texts, implementation="llmlingua", force_tokens=["\n", "?"])
    text = texts[-1]
    before = ours.llmlingua.model.forward_calls
    shared = ours.compress_rates(text, [0.3, 0.5, 0.8])
    assert ours.llmlingua.model.forward_calls - before == 1
    theirs_shared = theirs.compress_rates(text, [0.3, 0.5, 0.8])  # llmlingua's cut per rate on memoised scores
    for rate, got in shared.items():
        expected = theirs.compress(text, rate)
        assert (theirs_shared[rate].text, theirs_shared[rate].own) == (expected.text, expected.own)
        assert (got.text, got.dropped) == (expected.text, expected.dropped)
        assert got.own == expected.own
        single = ours.compress(text, rate)
        assert (single.text, single.dropped, single.own) == (got.text, got.dropped, got.own)


def test_implementation_is_a_checked_parameter_of_the_registry_entry():
    from workbench.methods.info import ParamError
    from workbench.methods.registry import lookup, resolve_params

    info = lookup("llmlingua-2", "prompt")
    assert resolve_params(info, {})["implementation"] == "workbench"
    assert resolve_params(info, {"implementation": "llmlingua"})["implementation"] == "llmlingua"
    with pytest.raises(ParamError) as err:
        resolve_params(info, {"implementation": "fast"})
    assert err.value.field == "implementation" and "'workbench'" in str(err.value)


def test_dropped_spans_from_located_words_equal_parsing_the_labels(reference, texts):
    """WordSpans (words located once, numpy per rate) gives the spans that parsing llmlingua's labelled words gives,
    for every text and rate (the rate-1 path's regex words included)."""
    from workbench.methods.llmlingua2_fast import Lingua2Cut
    from workbench.methods.llmlingua2_spans import LABEL_SEP, WORD_SEP, WordSpans, dropped_from_word_labels

    cutter = Lingua2Cut(reference.llmlingua, reference.family)
    compared = 0
    for text in texts:
        (scored,) = cutter.score([text], force_tokens=["\n", "?"])
        spans = {}
        for rate in RATES:
            result, words, labels = cutter.cut(scored, rate, return_word_label=True, word_sep=WORD_SEP,
                                               label_sep=LABEL_SEP)
            located = spans.setdefault(rate >= 1.0, WordSpans(text, words))
            expected = dropped_from_word_labels(text, result["fn_labeled_original_prompt"])
            assert located.dropped(labels) == expected, (reference.family, rate, text[:60])
            compared += expected is not None
    assert compared >= len(RATES)  # exact spans (not only None) were compared


@pytest.mark.parametrize("text,words,labels", [
    ("a b\nc d", ["a", "b", "\n", "c", "d"], [1, 0, 0, 0, 1]),        # a whitespace word dropped with others
    ("a b\nc d", ["a", "b", "\n", "c", "d"], [1, 1, 0, 1, 1]),        # only a whitespace word dropped: no span
    ("  a  b  ", ["a", "", "b"], [0, 1, 1]),                          # empty words are skipped
    ("a [UNK] b", ["a", "x", "b"], [1, 0, 1]),                        # a word not in the text: None
    ("a b", [], []),                                                  # no words for a non-blank text: None
    ("  ", [], []),
    ("a\x1fb c", ["a\x1fb", "c"], [0, 1]),                            # a separator inside a word: the parse's answer
])
def test_word_spans_edge_cases(text, words, labels):
    from workbench.methods.llmlingua2_spans import LABEL_SEP, WORD_SEP, WordSpans, dropped_from_word_labels

    labelled = WORD_SEP.join(f"{w}{LABEL_SEP}{label}" for w, label in zip(words, labels))
    assert WordSpans(text, words).dropped(labels) == dropped_from_word_labels(text, labelled)
