#!/usr/bin/env bash
# Every GPU measurement of issue #30 in one run (<= 8 minutes on one H200), JSON into OUTDIR.
#
#   benchmarks/gpu_check.sh OUTDIR            # on a CUDA machine
#   benchmarks/gpu_check.sh OUTDIR --tiny     # on the CPU with tiny sizes (what tests/test_gpu_check.py runs)
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh OUTDIR   # the same
#
# Optional environment: CHECKPOINT (a trained `paper` PatchGuard: makes the PGD-1000 AUROC
# comparison informative; untrained weights collapse every adversarial AUROC to ~0), PYTHON.
#
# Steps, each under its own time limit (seconds on the GPU; 480 s in all), each writing
# OUTDIR/<step>.json and its log OUTDIR/<step>.log; a failed or timed-out step is recorded in
# OUTDIR/summary.json and the next step still runs. The limits are estimates from the H200 figures of
# docs/findings/attack-engine-performance.md (PGD 1,168 images·steps/s fp32, 1,463 bf16; training
# step 0.26-0.41 s), not yet checked on a GPU:
#   1. memory_flat       (60 s)  memory left after each batch: eager, compiled, CUDA graph, fp32/bf16
#   2. cuda_graph_tests  (25 s)  tests/test_cuda_graph.py + tests/test_compiled_attack.py on the GPU machine
#   3. pgd_category      (170 s) PGD-1000 on 100 textures/brick images at 224 px, fp32 and bf16 (AUROC delta)
#   4. pgd_compiled      (90 s)  the same in bf16 with PGD(compile=True) (compilation included)
#   5. train_precision   (100 s) paper training step bf16 vs fp32, 100 steps' loss curves, batches prefetched
#   6. attack_scaling    (35 s)  cost curves on the GPU (paper ViT-S/14), exponents + plot
set -uo pipefail

OUTDIR=${1:?usage: benchmarks/gpu_check.sh OUTDIR [--tiny]}
TINY=${GPU_CHECK_TINY:-0}
[[ "${2:-}" == "--tiny" ]] && TINY=1
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# Without an installed robustad (a bare device machine), map the repository onto the package name.
if ! "$PYTHON" -c "import robustad" 2>/dev/null; then
    SHIM=$(mktemp -d)
    ln -s "$HERE" "$SHIM/robustad"
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
cd "$HERE"

if [[ "$TINY" == 1 ]]; then
    DEVICE=cpu
    MEMORY=(--tiny --variants fp32_eager,bf16_eager); PGD=(--tiny --variants fp32,bf16); PGD_COMPILED=(--tiny --variants fp32_compiled)
    TRAIN=(--tiny --prefetch)
    SCALING=(--tiny); SCALE=20
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    DEVICE=cuda
    MEMORY=(--images 8 --steps 2 --batches 4 --variants fp32_eager,bf16_eager,fp32_graph,bf16_graph,fp32_compiled)
    PGD=(--images 100 --steps 1000 --variants fp32,bf16 ${CHECKPOINT:+--checkpoint "$CHECKPOINT"})
    PGD_COMPILED=(--images 100 --steps 1000 --variants bf16_compiled ${CHECKPOINT:+--checkpoint "$CHECKPOINT"})
    TRAIN=(--profile paper --steps 100 --prefetch)
    SCALING=(--profile paper --images 8,16,32,64 --steps 5,10,20 --sizes 112,224,336 --base 16,10,224 --repeats 2)
    SCALE=1
fi

declare -A STATUS
step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, stdout to NAME.json
    local name=$1 limit=$(( $2 * SCALE )); shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUTDIR/$name.json" 2> "$OUTDIR/$name.log"
    local rc=$?
    STATUS[$name]="{\"rc\": $rc, \"seconds\": $(( SECONDS - start )), \"limit_s\": $limit}"
    echo "$name: rc $rc in $(( SECONDS - start )) s" >&2
}

step memory_flat 60 "$PYTHON" benchmarks/memory_flat.py --device "$DEVICE" --json "${MEMORY[@]}"
if [[ "$TINY" == 1 ]]; then
    STATUS[cuda_graph_tests]='{"rc": null, "skipped": "tiny mode: no CUDA device"}'
else
    step cuda_graph_tests 25 "$PYTHON" -m pytest -q -rs tests/test_cuda_graph.py tests/test_compiled_attack.py
fi
step pgd_category 170 "$PYTHON" benchmarks/pgd_category.py --device "$DEVICE" --json "${PGD[@]}"
step pgd_compiled 90 "$PYTHON" benchmarks/pgd_category.py --device "$DEVICE" --json "${PGD_COMPILED[@]}"
step train_precision 100 "$PYTHON" benchmarks/train_precision.py "$OUTDIR/train_precision" --device "$DEVICE" "${TRAIN[@]}"
step attack_scaling 35 "$PYTHON" benchmarks/attack_scaling.py "$OUTDIR/attack_scaling" --device "$DEVICE" "${SCALING[@]}"

{
    echo "{\"tiny\": $([[ "$TINY" == 1 ]] && echo true || echo false), \"device\": \"$DEVICE\", \"steps\": {"
    first=1
    for name in memory_flat cuda_graph_tests pgd_category pgd_compiled train_precision attack_scaling; do
        [[ $first == 1 ]] || echo ","
        first=0
        echo "\"$name\": ${STATUS[$name]}"
    done
    echo "}}"
} > "$OUTDIR/summary.json.tmp" && mv "$OUTDIR/summary.json.tmp" "$OUTDIR/summary.json"
cat "$OUTDIR/summary.json"
for name in memory_flat pgd_category pgd_compiled train_precision attack_scaling; do
    [[ $(echo "${STATUS[$name]}" | sed 's/.*"rc": \([0-9]*\).*/\1/') == 0 ]] || exit 1
done
