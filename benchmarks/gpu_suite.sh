#!/usr/bin/env bash
# Every GPU figure the workbench quotes, in one run on one machine: each part's table goes to OUTDIR/PART.txt
# (with its stderr), a part that fails or runs past its time is reported and the others still run.
#
#   benchmarks/gpu_suite.sh OUTDIR [--parts prefill,lingua2,prompt,workers,quickstart] [--smoke]
#
# Parts (and what each answers):
#   prefill    one prefill for a 9-rate sweep at batch 1 on Llama-3.1-8B shapes (random weights, bfloat16), with the
#              continuation written into reserved room; the continuation step before/after (kv_room)
#   lingua2    LLMLingua-2: llmlingua's compress_prompt against the workbench's cut, on the GPU
#   prompt     prompt-compressor throughput, batched vs one sample at a time (Selective Context, prompt cells)
#   workers    a sweep on N Ray workers, N = 1 … GPUs: speed-up and scheduling overhead per unit (needs the ray extra)
#   quickstart the quickstart preset single-process and with --workers 1: equal records (scripts/compare_sessions.py)
#              and the wall time of each (the overhead of one worker; needs the ray extra)
#
# --smoke: the same parts with CPU-sized models and inputs (the embedded model instead of the 8B shapes), to check
# the wiring on a machine without a GPU; its figures mean nothing.
# PYTHON picks the interpreter (default: the repository's .venv, else python3); PART_TIMEOUT the seconds a part may
# take (default 300).
set -uo pipefail

cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_suite.sh OUTDIR [--parts LIST] [--smoke]}
shift
parts="prefill,lingua2,prompt,workers,quickstart"
smoke=0
while [ $# -gt 0 ]; do
    case "$1" in
        --parts) parts=${2:?--parts needs a comma-separated list}; shift 2 ;;
        --smoke) smoke=1; shift ;;
        *) echo "gpu_suite.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
for part in ${parts//,/ }; do
    case "$part" in
        prefill|lingua2|prompt|workers|quickstart) ;;
        *) echo "gpu_suite.sh: unknown part '$part' (prefill, lingua2, prompt, workers, quickstart)" >&2; exit 2 ;;
    esac
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
limit=${PART_TIMEOUT:-300}
mkdir -p "$out" || exit 2
export PYTHONUNBUFFERED=1

if [ "$smoke" = 1 ]; then
    device=cpu
    prefill=(--model smollm2-135m --context 128 --continuation 16 --rates 1,9 --repeats 1 --batch 1)
    lingua2=(--sizes tiny --words 512 --repeats 1 --batch-texts 2 --batch-words 100)
    prompt=(--samples 2 --context 128 --continuation 16 --batch 2)
    workers=(--samples 2 --context 128 --continuation 16 --workers 1 --methods knorm --rates 0.5)
    samples=(--samples 1)
else
    device=cuda
    prefill=(--model llama-8b-random --dtype bfloat16 --context 2048 --continuation 64 --rates 1,3,5,9 --repeats 2 --batch 1)
    lingua2=(--repeats 3)
    prompt=(--samples 32 --context 512 --continuation 64 --batch 16)
    workers=(--samples 16 --context 2048 --continuation 64 --methods knorm,snapkv --rates 0.5,0.25)
    samples=()
fi

status=0
run_part() {  # name, then the command; its output to OUTDIR/name.txt, a one-line verdict here
    local name=$1
    shift
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "$name: ok ($((SECONDS - start)) s)"
    else
        [ $rc -eq 124 ] && echo "$name: ran past ${limit} s" || echo "$name: failed (exit $rc)"
        tail -n 5 "$out/$name.txt" | sed 's/^/    /'
        status=1
    fi
}

{
    echo "gpu_suite on $(hostname) at $(date -u +%FT%TZ), device $device"
    "$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda",
      *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
EOF
} | tee "$out/machine.txt"

for part in ${parts//,/ }; do
    case "$part" in
        prefill) run_part prefill "$PYTHON" benchmarks/bench_shared_prefill.py --device "$device" "${prefill[@]}" ;;
        lingua2) run_part lingua2 "$PYTHON" benchmarks/bench_llmlingua2.py --device "$device" "${lingua2[@]}" ;;
        prompt) run_part prompt "$PYTHON" benchmarks/bench_prompt_batching.py --device "$device" "${prompt[@]}" ;;
        workers) run_part workers "$PYTHON" benchmarks/bench_workers.py --device "$device" "${workers[@]}" ;;
        quickstart)
            rm -f "$out/quickstart-single.json" "$out/quickstart-workers1.json"
            run_part quickstart-single "$PYTHON" -m workbench --preset quickstart --device "$device" "${samples[@]}" \
                --out "$out/quickstart-single.json"
            run_part quickstart-workers1 "$PYTHON" -m workbench --preset quickstart --device "$device" "${samples[@]}" \
                --workers 1 --out "$out/quickstart-workers1.json"
            # Bitwise: one process each, the same kernels on the same inputs in the same order.
            run_part quickstart-compare "$PYTHON" scripts/compare_sessions.py "$out/quickstart-single.json" \
                "$out/quickstart-workers1.json"
            ;;
    esac
done
exit $status
