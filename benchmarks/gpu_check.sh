#!/usr/bin/env bash
# One command for a GPU machine: every CUDA-only test and the CUDA rows of the benchmarks, with a
# compact report at the end (target: under 8 minutes on one H100, after the one-time JIT build of
# the nerfacc / gsplat CUDA extensions, which the report times apart).
#
#   bash benchmarks/gpu_check.sh            # in the repo, with the venv of the README activated
#   bash benchmarks/gpu_check.sh --dry-run  # no GPU: the same pieces on the CPU at toy sizes (checks the script)
#
# Exit status: 0 when every step passed, 1 otherwise. The full log of each step is kept in
# $GPU_CHECK_LOGS (default: a new temporary folder), named in the report.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=""
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY="--dry-run"
elif ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; run on a GPU machine (or pass --dry-run)" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1
LOGS="${GPU_CHECK_LOGS:-$(mktemp -d -t text3d-gpu-check.XXXXXX)}"
mkdir -p "$LOGS"
REPORT="$LOGS/report.txt"
: > "$REPORT"
FAILED=0
START=$SECONDS

# step NAME TIMEOUT_S COMMAND...: run it, keep its log, add its status, time and RESULT lines to the report
step() {
    local name="$1" limit="$2"; shift 2
    local log="$LOGS/$name.log" t0=$SECONDS rc
    if [[ -n "$DRY" ]]; then limit=$((limit * 4)); fi  # a CPU stands in: allow it more time
    echo "== $name ($*)" >&2
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$log" 2>&1
    rc=$?
    local status="ok"
    if [[ $rc -eq 124 ]]; then status="TIMEOUT after ${limit}s"; FAILED=1
    elif [[ $rc -ne 0 ]]; then status="FAIL (exit $rc)"; FAILED=1; fi
    printf '%-12s %-22s %4ds\n' "$name" "$status" "$((SECONDS - t0))" >> "$REPORT"
    if grep -qE '^RESULT ' "$log"; then
        grep -E '^RESULT ' "$log" | sed 's/^RESULT /    /' >> "$REPORT"
    elif grep -qE ' (passed|failed|skipped|deselected|error)' "$log"; then
        grep -E '^SKIPPED|^FAILED|^ERROR' "$log" | head -10 | sed 's/^/    /' >> "$REPORT"
        grep -E ' (passed|failed|skipped|deselected|error)' "$log" | tail -1 | sed 's/^/    pytest: /' >> "$REPORT"
    else
        tail -n 12 "$log" | sed 's/^/    /' >> "$REPORT"
    fi
    if [[ "$status" != "ok" ]]; then grep -v '^\s' "$log" | tail -3 | sed 's/^/    | /' >> "$REPORT"; fi
}

PY="python benchmarks/gpu_check.py"
step env          300 $PY env $DRY
step cuda-tests   240 env PYTHONPATH=benchmarks python -m pytest -q -rs -p gpu_tests_plugin tests
if [[ -z "$DRY" ]]; then
    step bench-render 120 python benchmarks/bench_render.py --repeats 5
    step bench-gauss  150 python benchmarks/bench_gaussians.py --cases 2000x128,10000x256,50000x512 --no-dense --repeats 3
fi
step fp16-prior   120 $PY fp16-prior $DRY
step sd-run       150 $PY sd-run $DRY
step guidance     240 $PY guidance $DRY
step quickstart   150 $PY quickstart $DRY
step batch        150 $PY batch $DRY

echo
echo "text3d GPU check${DRY:+ (dry run on the CPU: figures are meaningless)}: $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - START)) s"
cat "$REPORT"
echo "logs: $LOGS"
exit $FAILED
