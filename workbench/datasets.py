"""Evaluation data: bundled offline samples, Hugging Face datasets and local files.

A dataset *spec* is one string:

- a bundled name (see ``BUNDLED``), shipped inside ``workbench/data`` and read through
  ``importlib.resources`` so that a non-editable install finds it;
- ``hf:<path>[:<config>][:<split>]``, a Hugging Face dataset (split defaults to ``test``; write
  ``hf:<path>::<split>`` for a split without a config), loaded only when online or already cached;
- a path to a local ``.txt`` or ``.jsonl`` file.

``load_documents`` turns a spec into ``Document`` records; ``lm_samples`` turns it into fixed-length
token windows for perplexity. Importing this module imports no heavy library: ``datasets`` is imported
only for ``hf:`` specs, and the tokenizer is handed in by the caller.
"""

from __future__ import annotations

import json
import random
import re
import threading
from array import array
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "BUNDLED", "DatasetError", "DatasetInfo", "Document", "LMSample",
    "context_text", "count_tokens", "list_datasets", "lm_samples", "load_documents", "token_bound", "validate_dataset_spec",
]


class DatasetError(ValueError):
    """A dataset spec that cannot be used; the message is one line that names the spec."""


# What a dataset asks of a model, for grouping results by task (the analysis's interaction test).
TASK_TYPES = ("language modelling", "reasoning", "QA", "summarisation", "retrieval")


@dataclass(frozen=True)
class DatasetInfo:
    """A bundled dataset.

    ``kind`` is ``'text'`` (prose for language modelling) or ``'qa'`` (records whose ``text`` is the
    input and whose ``meta['answer']`` is the reference output). ``task_type`` groups datasets for the
    analysis's method × task-type test: one of :data:`TASK_TYPES`.
    """

    name: str
    description: str
    licence: str
    kind: str
    task_type: str = "language modelling"


BUNDLED: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("wikitext2", "WikiText-2 test split, tokenized release: 60 Wikipedia articles",
                    "CC BY-SA 3.0", "text"),
        DatasetInfo("tinystories", "TinyStories validation: ~1,000 short stories, one document per paragraph",
                    "CDLA-Sharing-1.0", "text"),
        DatasetInfo("gsm8k", "GSM8K test split: 1,319 grade-school maths problems with worked answers",
                    "MIT", "qa", "reasoning"),
        DatasetInfo("paulgraham", "49 Paul Graham essays, the usual needle-in-a-haystack filler",
                    "essays (c) Paul Graham, redistributed by an MIT-licensed repository", "text", "retrieval"),
        DatasetInfo("meetingbank", "MeetingBank validation: 3 meeting transcripts with reference summaries",
                    "CC BY-NC-SA 4.0", "qa", "summarisation"),
    )
}

# Keys a JSONL row (or a Hugging Face record) may hold its text under, in order of preference:
# a QA record with both 'context' and 'question' keeps the context as text and the question in meta.
TEXT_KEYS = ("text", "context", "prompt", "transcript", "question")

_EOT = "<|endoftext|>"
# An article title in the tokenized WikiText release is ' = Title = '; sections are ' = = Title = = '.
_WIKI_TITLE = re.compile(r" = ([^=](?:.*[^=])?) = ")


@dataclass(frozen=True)
class Document:
    """One unit of a dataset: an article, story paragraph, essay, problem or transcript."""

    text: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LMSample:
    """A window of ``context_tokens + continuation_tokens + 1`` token ids.

    The extra token is there so that, after the context is prefilled (and compressed), feeding the
    ``continuation_tokens`` tokens that follow it scores each against its successor: targets are
    ``input_ids[context_tokens + 1:]``, exactly ``continuation_tokens`` of them.
    """

    sample_id: str
    input_ids: tuple[int, ...]
    context_tokens: int


def list_datasets() -> list[DatasetInfo]:
    """The bundled datasets, in a stable order."""
    return list(BUNDLED.values())


def _unknown(spec: object) -> DatasetError:
    names = ", ".join(BUNDLED)
    return DatasetError(
        f"unknown dataset {spec!r}: expected a bundled dataset ({names}), "
        "'hf:<path>[:<config>][:<split>]', or a path to an existing .txt or .jsonl file"
    )


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise DatasetError(f"bad Hugging Face dataset spec {spec!r}: expected 'hf:<path>[:<config>][:<split>]'")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "test"
    return parts[0], config, split


def validate_dataset_spec(spec: str) -> None:
    """Check a spec's form without loading anything (local files: existence only).

    Raises ``DatasetError`` listing the bundled names when the spec is none of the accepted forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _unknown(spec)
    if spec in BUNDLED:
        return
    if spec.startswith("hf:"):
        _parse_hf(spec)
        return
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".txt", ".jsonl"):
        if not path.is_file():
            raise DatasetError(f"dataset file {spec!r} does not exist")
        return
    raise _unknown(spec)


# --- loading ----------------------------------------------------------------------------------------

def _bundled_text(relative: str) -> str:
    return resources.files("workbench.data").joinpath(relative).read_text(encoding="utf-8")


def _split_parts(text: str, blank_lines: int) -> list[str]:
    """Split on '<|endoftext|>' when the text has it, else on runs of >= ``blank_lines`` blank lines."""
    if _EOT in text:
        parts = text.split(_EOT)
    else:
        parts = re.split(r"\n(?:[ \t]*\n){%d,}" % blank_lines, text)
    return [p.strip() for p in parts if p.strip()]


def _wikitext(text: str) -> list[Document]:
    lines = text.splitlines(keepends=True)

    def blank(i: int) -> bool:
        return i < 0 or i >= len(lines) or not lines[i].strip()

    # A title stands between blank lines: two formula lines in the test split (' = 1 <unk> ... = ')
    # have the title's shape but run straight into their text.
    starts = [i for i, line in enumerate(lines)
              if _WIKI_TITLE.fullmatch(line.rstrip("\n")) and blank(i - 1) and blank(i + 1)]
    docs = []
    for start, end in zip(starts, starts[1:] + [len(lines)]):
        title = _WIKI_TITLE.fullmatch(lines[start].rstrip("\n")).group(1)
        # Keep the text byte for byte (the leading space of each line included); only the blank lines
        # between articles go, since documents are re-joined with a separator anyway.
        docs.append(Document("".join(lines[start:end]).rstrip(), {"title": title}))
    return docs


def _jsonl_rows(text: str, source: str) -> list[tuple[int, dict]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source}: line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{source}: line {lineno} is not a JSON object")
        rows.append((lineno, row))
    return rows


def _record_document(row: dict, source: str, where: str) -> Document:
    for key in TEXT_KEYS:
        if isinstance(row.get(key), str):
            return Document(row[key], {k: v for k, v in row.items() if k != key})
    raise DatasetError(f"{source}: {where} has no text field (looked for {', '.join(TEXT_KEYS)})")


def _gsm8k() -> list[Document]:
    docs = []
    for _, row in _jsonl_rows(_bundled_text("gsm8k/test.jsonl"), "gsm8k"):
        # The final answer follows '####'; thousands separators go so that it compares as a number.
        final = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        docs.append(Document(row["question"], {"question": row["question"], "answer": row["answer"], "final": final}))
    return docs


def _paulgraham() -> list[Document]:
    folder = resources.files("workbench.data").joinpath("paulgraham-essays")
    essays = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".txt") and not f.name.startswith("LICENSE")),
        key=lambda f: f.name,
    )
    return [Document(f.read_text(encoding="utf-8").strip(), {"title": f.name[:-len(".txt")]}) for f in essays]


def _meetingbank() -> list[Document]:
    rows = _jsonl_rows(_bundled_text("meetingbank/meetingbank_validation_sample.jsonl"), "meetingbank")
    # 'answer' repeats the summary so that every 'qa' dataset keeps its reference under one key.
    return [Document(r["transcript"], {"summary": r["summary"], "answer": r["summary"], "uid": r["uid"], "id": r["id"]})
            for _, r in rows]


def _bundled(name: str) -> list[Document]:
    if name == "wikitext2":
        return _wikitext(_bundled_text("wikitext2/test.txt"))
    if name == "tinystories":
        # The file lost its '<|endoftext|>' markers and blank lines also occur inside stories, so no
        # separator marks a story's end: each paragraph is a document. Re-joined with '\n\n' they give
        # back the file, so language-modelling windows still see whole stories.
        parts = _split_parts(_bundled_text("tinystories/tinystories_val.txt"), blank_lines=1)
        return [Document(p, {"index": i}) for i, p in enumerate(parts)]
    if name == "gsm8k":
        return _gsm8k()
    if name == "paulgraham":
        return _paulgraham()
    return _meetingbank()


def _hf(spec: str) -> list[Document]:
    path, config, split = _parse_hf(spec)
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{spec}: the 'datasets' package is not installed (pip install datasets)") from None
    try:
        rows = datasets.load_dataset(path, config, split=split)
    except Exception as exc:  # the library raises many types (ConnectionError, FileNotFoundError, ValueError ...)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetError(
            f"{spec}: could not load it ({reason}); offline, a Hugging Face dataset must already be in the "
            "local cache: load it once with network access, or save it as a .jsonl file and give that path"
        ) from None
    return [_record_document(dict(row), spec, f"row {i}") for i, row in enumerate(rows)]


def _local(spec: str) -> list[Document]:
    path = Path(spec).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{spec}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".jsonl":
        return [_record_document(row, spec, f"line {n}") for n, row in _jsonl_rows(text, spec)]
    # A .txt file is one document unless it has '<|endoftext|>' markers or parts separated by two or
    # more blank lines (a single blank line is an ordinary paragraph break).
    return [Document(p, {"index": i}) for i, p in enumerate(_split_parts(text, blank_lines=2))]


def load_documents(spec: str) -> list[Document]:
    """Load every document of a dataset spec (see the module docstring), in the dataset's order.

    - wikitext2: one document per article (a ' = Title = ' line between blank lines), text as in the
      tokenized release; meta ``title``.
    - tinystories: one document per paragraph (see ``_bundled``); meta ``index``.
    - gsm8k: text = question; meta ``question``, ``answer``, ``final`` (the number after '####').
    - paulgraham: one document per essay, sorted by file name; meta ``title`` (the file stem).
    - meetingbank: text = transcript; meta ``summary`` (also as ``answer``), ``uid``, ``id``.
    - local .txt: see ``_local``; local .jsonl and ``hf:``: text from the first of ``TEXT_KEYS``,
      every other key in meta.
    """
    validate_dataset_spec(spec)
    if spec in BUNDLED:
        docs = _bundled(spec)
    elif spec.startswith("hf:"):
        docs = _hf(spec)
    else:
        docs = _local(spec)
    if not docs:
        raise DatasetError(f"{spec}: holds no documents")
    return docs


# --- language-modelling windows ---------------------------------------------------------------------

_STREAMS: dict[tuple, array] = {}
_STREAMS_LOCK = threading.Lock()
_SEPARATOR = "\n\n"
_BATCH = 256  # documents per tokenizer call: fast tokenizers parallelise within a batch


def _stream_key(spec: str, tokenizer) -> tuple:
    source: tuple = (spec,)
    if spec not in BUNDLED and not spec.startswith("hf:"):
        # A local file may be edited between runs; its identity is its resolved path, size and mtime.
        stat = Path(spec).expanduser().resolve().stat()
        source = (str(Path(spec).expanduser().resolve()), stat.st_size, stat.st_mtime_ns)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return source + (name, len(tokenizer))


def _token_stream(spec: str, tokenizer) -> array:
    """All documents of ``spec`` as one stream of token ids, joined by the ids of '\\n\\n'.

    The whole dataset is tokenized (about a second for WikiText-2's 1.3 MB with a fast tokenizer), so
    the windows never depend on how many samples were asked for.
    """
    validate_dataset_spec(spec)
    key = _stream_key(spec, tokenizer)
    with _STREAMS_LOCK:
        if key in _STREAMS:
            return _STREAMS[key]
        texts = [d.text for d in load_documents(spec)]
        separator = tokenizer(_SEPARATOR, add_special_tokens=False)["input_ids"]
        stream = array("l")
        for start in range(0, len(texts), _BATCH):
            for i, ids in enumerate(tokenizer(texts[start:start + _BATCH], add_special_tokens=False)["input_ids"]):
                if start + i:
                    stream.extend(separator)
                stream.extend(ids)
        _STREAMS[key] = stream
        return stream


def count_tokens(spec: str, tokenizer) -> int:
    """Tokens of the dataset's stream under ``tokenizer`` (as ``lm_samples`` cuts it; cached in-process)."""
    return len(_token_stream(spec, tokenizer))


def token_bound(spec: str) -> int:
    """An upper bound on ``count_tokens`` for any tokenizer, without one: a token covers at least one byte
    of text (byte-level BPE, SentencePiece with byte fallback, word-level), plus a margin per document for
    a prefix-space token and the separator's tokens."""
    docs = load_documents(spec)
    return sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs) + 4 * len(docs)


def lm_samples(spec: str, tokenizer, n_samples: int, context_tokens: int, continuation_tokens: int,
               seed: int = 0) -> list[LMSample]:
    """``n_samples`` non-overlapping windows of ``context_tokens + continuation_tokens + 1`` tokens.

    The dataset's documents are tokenized with ``tokenizer`` (a Hugging Face tokenizer, no special
    tokens) and joined by the ids of '\\n\\n' into one stream; the stream is cut into consecutive
    windows from token 0, and ``random.Random(seed).sample`` picks ``n_samples`` of them, returned in
    the order drawn. The result depends only on (spec, tokenizer, n_samples, lengths, seed). The token
    stream is cached in-process per (spec, tokenizer name, vocabulary size), so repeated calls are
    cheap. Raises ``DatasetError`` when the stream holds fewer windows than asked.
    """
    if n_samples < 1 or context_tokens < 1 or continuation_tokens < 1:
        raise ValueError(
            f"n_samples, context_tokens and continuation_tokens must be >= 1 "
            f"(got {n_samples}, {context_tokens}, {continuation_tokens})"
        )
    stream = _token_stream(spec, tokenizer)
    width = context_tokens + continuation_tokens + 1
    available = len(stream) // width
    if n_samples > available:
        raise DatasetError(
            f"{spec}: its {len(stream)} tokens make {available} windows of {width} tokens "
            f"({context_tokens} context + {continuation_tokens} continuation + 1) but {n_samples} were asked; "
            "ask for fewer samples or shorter windows, or use a larger dataset"
        )
    picks = random.Random(seed).sample(range(available), n_samples)
    return [
        LMSample(f"{spec}@seed{seed}#{i}:offset{w * width}", tuple(stream[w * width:(w + 1) * width]), context_tokens)
        for i, w in enumerate(picks)
    ]


def window_count(spec: str, tokenizer, context_tokens: int, continuation_tokens: int) -> int:
    """How many windows ``lm_samples`` can draw from the dataset with these lengths (training uses them all)."""
    return len(_token_stream(spec, tokenizer)) // (context_tokens + continuation_tokens + 1)


def context_text(sample: LMSample, tokenizer) -> str:
    """The context part of a window (its first ``context_tokens`` tokens) decoded back to text."""
    # No clean-up of tokenization spaces: it would turn WikiText's ' .' into '.', and a prompt
    # compressor must see the text the model saw.
    return tokenizer.decode(list(sample.input_ids[:sample.context_tokens]), clean_up_tokenization_spaces=False)
