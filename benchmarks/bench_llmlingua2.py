"""LLMLingua-2: llmlingua 0.2.2's compress_prompt against the workbench's own cut (implementation 'workbench'),
on random-weight token classifiers (speed does not depend on the weights): a tiny one, where llmlingua's Python
post-processing dominates, and a BERT-base-sized one (768 hidden, 12 layers), where the classifier does.
Per size: one call at rate 0.5, the same call with the classifier's output answered from memory (post-processing
alone), a 9-rate sweep (llmlingua: nine calls on memoised scores; ours: one scoring,
nine cuts), and whether every output is identical. Then throughput of several texts: one at a time vs batched
(their chunks share the classifier's forward passes).

Usage: python benchmarks/bench_llmlingua2.py [--words 512 2048 8192] [--sizes tiny base] [--repeats 3]
                                             [--batch-texts 8 --batch-words 300] [--device cpu]
"""

from __future__ import annotations

# ruff: noqa: B023 - every lambda below is called at once, inside its loop iteration

import argparse
import pathlib
import statistics
import tempfile
import time

RATES9 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SIZES = {"tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
         "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}}


def _wikitext_words(n: int) -> str:
    from workbench.datasets import __file__ as datasets_file

    path = pathlib.Path(datasets_file).parent / "data" / "wikitext2" / "test.txt"
    words: list[str] = []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.strip().startswith("="):
            continue
        take = line.split()[: n - len(words)]
        words.extend(take)
        lines.append(" ".join(take))
        if len(words) >= n:
            break
    return "\n".join(lines)


def _classifier(folder: pathlib.Path, text: str, size: str) -> pathlib.Path:
    """A random BertForTokenClassification in a folder named like the official checkpoint, with a cased
    WordPiece vocabulary over the text's words (long words split into '##' pieces)."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    words = sorted({w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = {w for w in words if len(w) < 9} | {p for w in words if len(w) >= 9 for p in (w[:5], "##" + w[5:])}
    pieces |= {p for c in set(text) - set(" \n") for p in (c, "##" + c)}  # any word tokenizes without [UNK]
    vocab += sorted(pieces - set(vocab))
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    backend.decoder = decoders.WordPiece()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", do_lower_case=False)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, num_labels=2, **SIZES[size])
    torch.manual_seed(0)
    folder = folder / f"{size}-llmlingua-2-bert-base-multilingual-cased-meetingbank"
    BertForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _floor(compressor, text: str, rate: float, repeats: int) -> float:
    """Seconds of the passes that llmlingua's output itself requires, run in both paths on the same strings: the
    GPT (cl100k) count of the text, the classifier's tokenizer over the text (chunking), the kept words decoded,
    the GPT count of the compressed text. (llmlingua also decodes each chunk and tokenizes it again for the
    classifier's rows; ours does that only where it cannot prove the result equals the chunk's tokens: for this
    BERT WordPiece classifier, only chunks that start inside a word. That pass is in llmlingua's rest.)"""
    cutter = compressor.cutter
    obj, tok = cutter.obj, cutter.obj.tokenizer
    (scored,) = cutter.score([text], force_tokens=compressor.force_tokens)
    replaced = text
    for ori, new in scored.token_map.items():
        replaced = replaced.replace(ori, new)
    result, _, _ = cutter.cut(scored, rate)
    kept = []
    for chunk in scored.chunks:  # the words each chunk keeps at this rate (as the cut decodes them)
        _, _, labels = cutter.cut(type(scored)([chunk], scored.origin_tokens, [], scored.token_map), rate)
        kept.append([w for w, label in zip(chunk.words, labels) if label])

    def passes():
        obj.oai_tokenizer.encode(text)
        tok.tokenize(replaced)
        for words in kept:
            tok.convert_tokens_to_string(words)
        obj.oai_tokenizer.encode(result["compressed_prompt"])

    return _timed(passes, repeats)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--words", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-texts", type=int, default=16)
    p.add_argument("--batch-words", type=int, default=300)
    args = p.parse_args()

    from workbench.methods.llmlingua_compressors import LLMLingua2Compressor

    texts = {n: _wikitext_words(n) for n in args.words}
    big = _wikitext_words(max(args.words + [args.batch_texts * args.batch_words]))
    options = {"force_tokens": ["\n", "?"]}
    rows, batch_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = _classifier(pathlib.Path(tmp), big, size)
            ours = LLMLingua2Compressor(str(folder), device=args.device, implementation="workbench", **options)
            theirs = LLMLingua2Compressor(str(folder), device=args.device, implementation="llmlingua", **options)
            ours.load()
            theirs.load()
            for n, text in texts.items():
                repeats = args.repeats if size == "tiny" or n <= 2048 else 1
                ours.compress(text, 0.5)  # warm-up (memo of token traits and word counts starts empty per process)
                t_theirs, a = _timed(lambda: theirs.compress(text, 0.5), repeats)
                t_ours, b = _timed(lambda: ours.compress(text, 0.5), repeats)
                s_theirs, sa = _timed(lambda: theirs.compress_rates(text, RATES9), repeats)
                s_ours, sb = _timed(lambda: ours.compress_rates(text, RATES9), repeats)
                # Post-processing alone: the classifier's output for this text answered from memory in both paths.
                memos = (theirs.llmlingua.model, ours.llmlingua.model)
                for memo in memos:
                    memo.active = True
                theirs.compress(text, 0.5)  # fills the memo: the timed calls below run no forward pass
                ours.compress(text, 0.5)
                p_theirs, pa = _timed(lambda: theirs.compress(text, 0.5), repeats + 1)
                p_ours, pb = _timed(lambda: ours.compress(text, 0.5), repeats + 1)
                for memo in memos:
                    memo.active = False
                    memo.clear()
                same = all((x.text, x.dropped, x.own) == (y.text, y.dropped, y.own)
                           for x, y in [(a, b), (pa, pb)] + [(sa[r], sb[r]) for r in RATES9])
                floor = _floor(ours, text, 0.5, repeats + 1)
                rows.append((size, n, t_theirs, t_ours, p_theirs, p_ours, floor, s_theirs, s_ours,
                             "yes" if same else "NO"))
                print(f"  {size} {n} words done", flush=True)
            # Throughput: several short texts, one at a time vs their chunks batched through the classifier.
            words = big.split()
            batch = [" ".join(words[i * args.batch_words:(i + 1) * args.batch_words]) for i in range(args.batch_texts)]
            t_one, one = _timed(lambda: [ours.compress_rates(t, [0.5]) for t in batch], args.repeats)
            t_many, many = _timed(lambda: ours.compress_many(batch, [0.5]), args.repeats)
            same = all(x[0.5].text == y[0.5].text and x[0.5].dropped == y[0.5].dropped for x, y in zip(one, many))
            batch_rows.append((size, len(batch), args.batch_words, len(batch) / t_one, len(batch) / t_many,
                               "yes" if same else "NO"))

    print(f"\nLLMLingua-2 on {args.device}, random-weight BERT-family classifiers, force_tokens ['\\n', '?'], rate 0.5; "
          "times in ms (medians)")
    print("post-processing = the call with the classifier's output answered from memory; floor = the tokenizer and "
          "tiktoken passes that\nllmlingua's output requires, the same in both paths (text counted and tokenized, kept words "
          "decoded, compressed\ntext counted); rest = post-processing - floor (llmlingua's includes decoding each chunk "
          "and tokenizing it again,\nwhich ours skips where it provably gives the chunk's tokens back)")
    head = ("classifier", "words", "llmlingua", "ours", "ratio", "post-proc.: llmlingua", "ours", "ratio", "floor",
            "rest: llmlingua", "ours", "ratio", "9 rates: llmlingua", "ours", "ratio", "identical")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for size, n, t1, t2, p1, p2, floor, s1, s2, same in rows:
        r1, r2 = p1 - floor, p2 - floor
        rest_ratio = f"{r1 / r2:.1f}x" if r2 > 0 else "-"
        print(f"| {size} | {n} | {t1 * 1000:.1f} | {t2 * 1000:.1f} | {t1 / t2:.1f}x | {p1 * 1000:.1f} | "
              f"{p2 * 1000:.1f} | {p1 / p2:.1f}x | {floor * 1000:.1f} | {r1 * 1000:.1f} | {r2 * 1000:.1f} | "
              f"{rest_ratio} | {s1 * 1000:.1f} | {s2 * 1000:.1f} | {s1 / s2:.1f}x | {same} |")
    print(f"\nThroughput, {args.batch_texts} texts of {args.batch_words} words at rate 0.5 (ours): one at a time vs "
          "batched chunks")
    print("| classifier | texts | words each | one at a time (samples/s) | batched (samples/s) | speed-up | identical |")
    print("|---|---|---|---|---|---|---|")
    for size, k, w, one, many, same in batch_rows:
        print(f"| {size} | {k} | {w} | {one:.1f} | {many:.1f} | {many / one:.2f}x | {same} |")


if __name__ == "__main__":
    main()
