"""Prompt compressors (text → shorter text), described without importing any of them.

Each is built by :func:`build_compressor` and measured by feeding the compressed context to the
evaluated model and scoring the same continuation tokens as the baseline, so their ΔPPL sits in
the same table as the KV presses'. The rate (fraction kept) is passed to the compressor as is.
"""

from __future__ import annotations

from typing import Any

from workbench.methods.info import MethodInfo, ParamRule

RATE = "rate"


def _compressor(name, impl, summary, params=None, needs_hub=None, aliases=(), rules=None):
    return MethodInfo(name=name, family="prompt", summary=summary, params={RATE: None, **(params or {})}, rate_param=RATE,
                      implementation=impl, needs_hub=needs_hub, aliases=tuple(aliases), rules=rules or {})


_LLMLINGUA2_HUB = "needs the LLMLingua-2 checkpoint from the Hugging Face hub unless model_name is a local folder"

COMPRESSORS: dict[str, MethodInfo] = {
    i.name: i
    for i in [
        _compressor("random", "workbench.methods.prompt_rules:RandomCompressor",
                    "keep random words up to the budget (seeded from the text: deterministic)", {"seed": None}),
        _compressor("naive", "workbench.methods.prompt_rules:NaiveCompressor",
                    "rules: filler phrases, stop words, punctuation (never content words)"),
        _compressor("selective-context", "workbench.methods.selective_context:SelectiveContextCompressor",
                    "keep the units with the highest self-information under a causal LM",
                    {"unit": "phrase", "scoring_model": "evaluated", "chunk_tokens": 1024}, aliases=("selective_context", "sc")),
        _compressor("llmlingua-2", "workbench.methods.llmlingua_compressors:LLMLingua2Compressor",
                    "token classifier trained to keep or drop (BERT / XLM-R, MeetingBank)",
                    {"model_name": "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank", "force_tokens": None,
                     # 'workbench': the vectorised cut (identical output); 'llmlingua': llmlingua's compress_prompt
                     "implementation": "workbench"},
                    needs_hub=_LLMLINGUA2_HUB, aliases=("llmlingua2",),
                    rules={"implementation": ParamRule(choices=("workbench", "llmlingua"))}),
        _compressor("llmlingua-1", "workbench.methods.llmlingua_compressors:LLMLingua1Compressor",
                    "perplexity of a small causal LM decides what to drop (LLMLingua)",
                    {"model_name": "smollm2-135m"}, aliases=("llmlingua", "llmlingua1")),
        _compressor("longllmlingua", "workbench.methods.llmlingua_compressors:LongLLMLinguaCompressor",
                    "question-aware LLMLingua (contrastive perplexity, document reordering)",
                    {"model_name": "smollm2-135m", "condition_in_question": "after_condition", "rank_method": "longllmlingua"}),
    ]
}


def build_compressor(name: str, params: dict[str, Any]):
    """Instantiate a compressor (it loads its models in ``load``)."""
    import importlib

    info = COMPRESSORS[name]
    module, cls = info.implementation.split(":")
    return getattr(importlib.import_module(module), cls)(**params)
