#!/usr/bin/env bash
# GPU checks on a lent machine (one H100/H200, no network), run from the repository root:
#
#   bash benchmarks/gpu/run_gpu_checks.sh          # with .whl and .gpu_assets carried along
#
#   a  environment: nvidia-smi, versions, `import ray, deepspeed`, a bf16 matmul's TFLOP/s
#   b  throughput: `raytune-llm bench train` on a ~1.24B model (Llama-3.2-1B architecture, random
#      weights), bf16, ZeRO-2, packed rows of 2,048 tokens, one GPU (MFU); then the same worker
#      loop without Ray (gpu_checks.py no-ray) for Ray Train's overhead
#   c  memory planner: `bench train` on ~135M (SmolLM2-135M architecture) at ZeRO-2 and ZeRO-3,
#      torch.cuda.max_memory_allocated against the planner's estimate
#   d  checkpoint and resume: `raytune-llm train` at ZeRO-3 and ZeRO-2, interrupted (SIGINT) after
#      its first checkpoint, then the same command again
#
# Results go to $OUT as they come (at most 8 files): a_env.log, b_throughput.log, c_memory.log,
# d_resume.log, summary.md, results.json, details.tgz. Each step has its own timeout and a failed
# step does not stop the next; the whole script keeps to GPU_CHECK_BUDGET_S (default 570 s).
#
# GPU_CHECK_DRY=1: tiny models, fp32, short sequences and few steps, for a rehearsal on a CPU
# machine (DeepSpeed on its CPU accelerator). PYTHON picks the interpreter (default python3);
# GPU_CHECK_SKIP_INSTALL=1 skips installing .whl (when ray and deepspeed are already there).
set -u
set -o pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
ONLY=${GPU_CHECK_ONLY:-b,c,d}  # phases to run after a (e.g. GPU_CHECK_ONLY=c,d for a rerun)
SCALE=${GPU_CHECK_TIME_SCALE:-1}  # multiplies every step's time limit (a slow CPU rehearsal)
OUT=${OUT:-$REPO/runs/gpu_checks/out}
WORK=$REPO/runs/gpu_checks
RES=$WORK/results
LOGS=$WORK/logs
SITE=${GPU_CHECK_SITE:-/tmp/site}
T0=$(date +%s)
mkdir -p "$OUT" "$RES" "$LOGS"
rm -rf "$RES" "$LOGS"; mkdir -p "$RES" "$LOGS"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 RAYTUNE_LLM_CACHE=$WORK/cache

elapsed() { echo $(( $(date +%s) - T0 )); }
want() { [[ ",$ONLY," == *",$1,"* ]]; }

finish() {  # summary.md + results.json + details.tgz, after every step (a timeout still leaves them)
  timeout 60 "$PY" benchmarks/gpu/gpu_checks.py summary --results "$RES" --markdown "$OUT/summary.md" \
    --json "$OUT/results.json" > "$LOGS/summary.stdout" 2>&1 || echo "[gpu-checks] summary failed: $(tail -3 "$LOGS/summary.stdout")"
  tar -czf "$OUT/details.tgz" -C "$WORK" results logs 2>/dev/null || true
}

free_gpu() {  # GPU processes a killed step left behind (only this script runs on the lent machine)
  command -v nvidia-smi > /dev/null || return 0
  for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
    kill -9 "$pid" 2>/dev/null && echo "[gpu-checks] killed leftover GPU process $pid"
  done
}

# run_step NAME LIMIT_S LOGFILE COMMAND...: timeout, log to $OUT/LOGFILE, record rc and seconds.
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  limit=$(( limit * SCALE ))
  local left=$(( BUDGET - $(elapsed) - 15 ))
  if (( left < 20 )); then
    echo "[gpu-checks] $name: skipped, $(elapsed) s of the ${BUDGET} s budget used" | tee -a "$OUT/$log"
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped" "0" "$*" >> "$RES/steps.tsv"
    return 0
  fi
  (( limit > left )) && limit=$left
  echo "=== [$name] $(date -u +%H:%M:%S) t=$(elapsed)s limit ${limit}s: $*" | tee -a "$OUT/$log"
  local start=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=$?
  local secs=$(( $(date +%s) - start ))
  echo "=== [$name] exit $rc after ${secs}s" | tee -a "$OUT/$log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$*" >> "$RES/steps.tsv"
  free_gpu
  finish
  return 0
}

# ---------------------------------------------------------------- install the carried wheels
if [[ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]]; then
  echo "=== [install] .whl -> $SITE" | tee -a "$OUT/a_env.log"
  ls .whl/*.whl > /dev/null 2>&1 || { echo "[gpu-checks] no .whl/*.whl: carry .whl" | tee -a "$OUT/a_env.log"; }
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .whl/*.whl 2>&1 | tail -20 | tee -a "$OUT/a_env.log"
  export PYTHONPATH=$SITE:$REPO
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
echo "[install] done at t=$(elapsed)s" | tee -a "$OUT/a_env.log"

# ---------------------------------------------------------------- a: environment
cat > "$WORK/env_check.py" <<'EOF'
import json, os, platform, subprocess, sys, time
info = {"python": sys.version.split()[0], "executable": sys.executable, "dry": os.environ.get("GPU_CHECK_DRY", "0"),
        "cpus": os.cpu_count()}
import torch
info.update(torch=torch.__version__, cuda=torch.version.cuda, gpu_available=torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=p.total_memory / 2**30, sms=p.multi_processor_count)
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True).stdout.strip()
    except OSError:
        info["driver"] = None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    info["bf16_matmul_tflops_8192"] = 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12
    del a, b
else:
    info.update(gpu="none (CPU)", gpu_memory_gib=0.0, driver=None)
import importlib.metadata as md
for name in ("ray", "deepspeed", "transformers", "peft", "accelerate", "pydantic", "pyarrow", "pandas", "numpy",
             "typing_extensions", "packaging", "aiohttp", "protobuf", "tokenizers", "safetensors", "jsonschema",
             "opentelemetry-sdk", "grpcio"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
problems = []
for module in ("ray", "ray.train.torch", "ray.tune", "ray.data", "deepspeed", "raytune_llm.cli", "raytune_llm.bench.run",
               "raytune_llm.train.loop"):
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"import {module}: {type(exc).__name__}: {exc}")
try:
    import ray.dashboard.optional_deps  # noqa: F401
    info["ray_dashboard_deps"] = True
except Exception as exc:  # noqa: BLE001
    info["ray_dashboard_deps"] = f"{type(exc).__name__}: {exc}"
info["import_problems"] = problems
os.makedirs(sys.argv[1], exist_ok=True)
json.dump(info, open(os.path.join(sys.argv[1], "env.json"), "w"), indent=2)
print(json.dumps(info, indent=2))
if problems:
    print("[gpu-checks] IMPORTS FAILED:\n  " + "\n  ".join(problems))
    sys.exit(3)
EOF
{
  echo "=== [env] t=$(elapsed)s"
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  command -v nvcc > /dev/null && nvcc --version | tail -2
  echo "python: $(command -v "$PY")  PYTHONPATH=$PYTHONPATH  DRY=$DRY"
  df -h "$REPO" /tmp 2>/dev/null | tail -2
} 2>&1 | tee -a "$OUT/a_env.log"
run_step env 90 a_env.log "$PY" "$WORK/env_check.py" "$RES"
if ! grep -q '"import_problems": \[\]' "$RES/env.json" 2>/dev/null; then
  echo "[gpu-checks] FATAL: ray/deepspeed/raytune_llm do not import (see a_env.log); nothing else can run" | tee -a "$OUT/a_env.log"
  finish
  exit 3
fi

# Ray smoke test: a local Ray, one task, shutdown. With the dashboard's optional packages present, Ray
# starts its dashboard agent in full mode, and if that agent cannot start (an aiohttp or protobuf in
# the image that this Ray does not accept, say) the raylet dies with it. Then retry with aiohttp_cors
# hidden: Ray runs the agent in its minimal mode (no dashboard; Train V2 then logs warnings).
cat > "$WORK/ray_smoke.py" <<'PYEOF'
import time
import ray
t = time.perf_counter()
ray.init(num_cpus=2, log_to_driver=False)
print("ray smoke:", ray.get(ray.remote(lambda: "task ran").remote()), f"in {time.perf_counter() - t:.1f} s;",
      "GPUs seen by Ray:", ray.cluster_resources().get("GPU", 0))
ray.shutdown()
PYEOF
if [[ "${GPU_CHECK_QUICK:-0}" != 1 ]]; then  # GPU_CHECK_QUICK=1: a rerun that already saw Ray start
run_step ray_smoke 90 a_env.log "$PY" "$WORK/ray_smoke.py"
fi
if [[ "${GPU_CHECK_QUICK:-0}" != 1 ]] && [[ "$(tail -1 "$RES/steps.tsv" | cut -f2)" != 0 && -d "$SITE/aiohttp_cors" ]]; then
  echo "[gpu-checks] Ray did not start with its dashboard: retrying without it (aiohttp_cors hidden)" | tee -a "$OUT/a_env.log"
  mkdir -p "$SITE.hidden" && mv "$SITE"/aiohttp_cors* "$SITE.hidden"/
  run_step ray_smoke_minimal 90 a_env.log "$PY" "$WORK/ray_smoke.py"
fi

# ---------------------------------------------------------------- settings (GPU, or the dry run)
if [[ "$DRY" == 1 ]]; then
  MODEL_ARGS=(--dtype fp32 --tiny)
  COMMON=(train.precision=fp32 train.cpus_per_worker=1 data.max_length=64)
  TP=("${COMMON[@]}" train.batch_size=2 train.gradient_accumulation_steps=2)
  TP_STEPS=(--warmup-steps 1 --steps 2)
  MEM=("${COMMON[@]}" train.batch_size=2)
  MEM_STEPS=(--warmup-steps 1 --steps 2)
  RESUME=("${COMMON[@]}" train.batch_size=2 train.checkpoint_every_steps=40)
else
  MODEL_ARGS=(--dtype bf16)
  TP=()
  TP_STEPS=(--warmup-steps 3 --steps 8)
  MEM=()
  MEM_STEPS=(--warmup-steps 2 --steps 5)
  RESUME=()
fi
CLI=("$PY" -m raytune_llm.cli)

# ---------------------------------------------------------------- b: throughput, ~1.24B, ZeRO-2
if want b; then
run_step make_model_1b 120 b_throughput.log "$PY" benchmarks/gpu/gpu_checks.py make-model \
  --arch benchmarks/gpu/llama-3.2-1b.config.json --tokenizer .gpu_assets/smollm2_tokenizer \
  --out runs/gpu_models/llama-3.2-1b-random "${MODEL_ARGS[@]}"
if want c || want d; then
run_step make_model_135m 60 b_throughput.log "$PY" benchmarks/gpu/gpu_checks.py make-model \
  --arch benchmarks/gpu/smollm2-135m.config.json --tokenizer .gpu_assets/smollm2_tokenizer \
  --out runs/gpu_models/smollm2-135m-random "${MODEL_ARGS[@]}"
fi
run_step bench_1b_zero2 200 b_throughput.log "${CLI[@]}" bench train benchmarks/gpu/throughput_1b.yaml "${TP[@]}" \
  --workers 1 "${TP_STEPS[@]}" --out "$RES/throughput"
run_step no_ray_1b_zero2 150 b_throughput.log "$PY" benchmarks/gpu/gpu_checks.py no-ray benchmarks/gpu/throughput_1b.yaml \
  "${TP[@]}" "${TP_STEPS[@]}" --ray-result "$RES/throughput/bench_train.jsonl" --out "$RES/no_ray.json"
fi

# ---------------------------------------------------------------- c: memory estimate vs measured, ~135M
# c and d need the ~135M model folder: made in b, or here when b is not run.
if { want c || want d; } && ! want b; then  # (b made it already when c or d was wanted)
  run_step make_model_135m 60 c_memory.log "$PY" benchmarks/gpu/gpu_checks.py make-model \
    --arch benchmarks/gpu/smollm2-135m.config.json --tokenizer .gpu_assets/smollm2_tokenizer \
    --out runs/gpu_models/smollm2-135m-random "${MODEL_ARGS[@]}"
fi
want c && for stage in 2 3; do
  run_step "bench_135m_zero$stage" 120 c_memory.log "${CLI[@]}" bench train benchmarks/gpu/memory_135m.yaml "${MEM[@]}" \
    "train.zero_stage=$stage" --workers 1 "${MEM_STEPS[@]}" --out "$RES/memory_z$stage"
  run_step "estimate_135m_zero$stage" 60 c_memory.log "$PY" benchmarks/gpu/gpu_checks.py estimate \
    benchmarks/gpu/memory_135m.yaml "${MEM[@]}" "train.zero_stage=$stage" --out "$RES/estimate_z$stage.json"
done

# ---------------------------------------------------------------- d: checkpoint and resume, ~135M
want d && for stage in 3 2; do
  run_step "resume_135m_zero$stage" 240 d_resume.log "$PY" benchmarks/gpu/gpu_checks.py resume \
    benchmarks/gpu/memory_135m.yaml "${RESUME[@]}" "train.zero_stage=$stage" \
    --out "$RES/resume_z$stage.json" --log-prefix "$LOGS/resume_z$stage" --first-timeout $(( 110 * SCALE )) --second-timeout $(( 120 * SCALE ))
done

finish
echo "[gpu-checks] done in $(elapsed) s"
cat "$OUT/summary.md"
