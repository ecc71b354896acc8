#!/usr/bin/env bash
# The paper presets on one GPU, in one command of at most 8.5 minutes, the sum of its parts' time limits (a
# session's device time is short):
#   1. throughput of every script's train steps at --preset paper (bench/<script>_bench.py);
#   2. the PCFG teacher of Sec. 4.2 (Fig. 4) at the paper's size, batch and schedule for its first 2000 of 8000
#      steps, then the n-gram and non-terminal probes on its checkpoints: does the 3-gram M_robust peak inside
#      the sharp drop at this scale? (README, "Where the M_robust maximum falls".)
# Usage: bash bench/gpu_check.sh [OUTDIR]   (default out/gpu_check). Each part has its own time limit, so a slow
# part is cut short and the rest still runs; the log and the teacher's results.json land in OUTDIR.
# A dry run of the same plumbing on a CPU, in about a minute:
#   PRESET=smoke DEVICE=cpu TEACHER_STEPS=40 CAP=20 EVERY=10 bash bench/gpu_check.sh out/gpu_check_dry
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-out/gpu_check}
PRESET=${PRESET:-paper}
DEVICE=${DEVICE:-cuda}
TEACHER_STEPS=${TEACHER_STEPS:-8000}  # the schedule's length: Fig. 4's teacher run
CAP=${CAP:-2000}                      # steps actually taken: Fig. 4's phases 1 and 2 end at 600 and 2000
EVERY=${EVERY:-200}                   # checkpoint interval (the paper's)
PY=${PYTHON:-python3}
BENCHES=${BENCHES:-1}                 # 0: skip part 1 (the tests run the benches in-process, and this script without)
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"

part() {  # part SECONDS ARGS...: one script run under a time limit, its output in the log
    local limit=$1; shift
    echo "== $PY $* (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$PY" "$@" 2>&1 | tee -a "$LOG"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee -a "$LOG"

steps() { [ "$PRESET" = paper ] && echo "$1" || echo 2; }  # steps timed by each bench (a dry run: 2)
BENCH=(--preset "$PRESET" --device "$DEVICE")
if [ "$BENCHES" = 1 ]; then
    part 45 bench/parity_bench.py "${BENCH[@]}" --bench_steps "$(steps 2000)"
    part 45 bench/parity_bench.py --arch transformer "${BENCH[@]}" --bench_steps "$(steps 200)"
    part 45 bench/pcfg_bench.py "${BENCH[@]}" --bench_steps "$(steps 50)"
    part 45 bench/lm_pretrain_bench.py --data tests/data/pride_and_prejudice_ch01-12.txt "${BENCH[@]}" \
        --bench_steps "$(steps 20)"
fi

RUN=${RUNS:-out/pcfg}/$(basename "$OUTDIR")-teacher  # checkpoints stay here; OUTDIR gets a few small files
rm -rf "$RUN" "$RUN-probe"
# --budgets: the preset's (up to 16000) would exceed this shorter teacher run and be refused
COMMON=(--preset "$PRESET" --device "$DEVICE" --teacher_steps "$TEACHER_STEPS" --ckpt_every "$EVERY" --budgets "$CAP")
part 210 pcfg.py "${COMMON[@]}" --mode teacher --max_steps "$CAP" --out "$RUN"
part 120 pcfg.py "${COMMON[@]}" --mode probe --probe_size 512 --teacher_dir "$RUN" --out "$RUN-probe"
"$PY" docs/pcfg_extra.py "$RUN-probe" 2>&1 | tee -a "$LOG"  # Fig. 4 and the probe figure, from its results.json
for f in results.json fig_curriculum.png fig_probes.png metrics.jsonl; do
    for d in "$RUN-probe" "$RUN"; do [ -f "$d/$f" ] && cp "$d/$f" "$OUTDIR/" && break; done
done
"$PY" - "$RUN-probe/results.json" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    sys.exit("no probe results")
t, p = r["teacher"], r["probe"]
print("phases:", r.get("phases"))
print("checks:", r.get("checks"))
m = p["m_robust"]["3gram"]["l1"]["median"]
loss = dict(zip(t["steps"], t["val_loss"]))
for s, v in zip(p["steps"], m):
    print(f"step {s:>5}  val loss {loss[s]:.3f}  3-gram M_robust median {v:.4f}")
EOF
