#!/usr/bin/env bash
# A 5-minute check of the paper preset on a machine with an accelerator (GPU or TPU).
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (from anywhere; PYTHON=... to choose the interpreter)
#
# 1. device smoke test: the devices JAX sees, a 8192^2 f32 matmul (TFLOP/s), one
#    allocator decision on the device;
# 2. the allocator training step at paper size (benchmarks/train_step.py, B = 256, N = 30);
# 3. the paper preset's allocator chunks and one chunk of the shared-shape sweep, every
#    stage, timed against the CPU plan committed in docs/plan_paper.json
#    (benchmarks/gpu_check.py), with the predicted wall time of the whole preset.
# Each step has its own time limit; the outputs go to OUT_DIR (default gpu_check_out).
# The persistent compilation cache goes to OUT_DIR/jax_cache, so a rerun compiles nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR="$PWD/$OUT/jax_cache"
status=0

echo "== 1. device smoke test"
timeout 90 "$PY" - <<'PYEOF' 2>&1 | tee "$OUT/smoke.txt" || status=1
import time, jax, jax.numpy as jnp
print("backend", jax.default_backend(), "devices", jax.devices())
if jax.default_backend() == "cpu":
    raise SystemExit("error: JAX sees no accelerator (install jax[cuda12] or jax[tpu])")
x = jnp.ones((8192, 8192), jnp.float32)
f = jax.jit(lambda a: a @ a)
f(x).block_until_ready()
t0 = time.perf_counter(); [f(x).block_until_ready() for _ in range(10)]
dt = (time.perf_counter() - t0) / 10
print(f"matmul_tflops {2 * 8192**3 / dt / 1e12:.1f}")
from dynmec_jax import pipeline, system
scn = system.sample_scenarios(jax.random.key(0), system.SystemParams(), 4)
d = pipeline.load_pipeline().decide(scn)
print("decision on", d.offload.devices() if hasattr(d.offload, "devices") else "host",
      "offloaded", int(d.offload.sum()))
PYEOF

echo "== 2. training step at paper size"
timeout 100 "$PY" benchmarks/train_step.py --batch 256 --rounds 5 --chunk 10 2>&1 \
  | grep -v Warning | tee "$OUT/train_step.txt" || status=1

echo "== 3. paper preset: allocator chunks and one sweep chunk against the CPU plan"
timeout 240 "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_plan.json" 2>&1 \
  | grep -v -e Warning -e "^I[0-9]" | tee "$OUT/gpu_plan.txt" || status=1
exit $status
