#!/usr/bin/env bash
# One-shot GPU check of PaGeR (issue 17): needs only this repository and a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, <= 8 minutes on one H100/H200
#   bash benchmarks/gpu_check.sh --cpu-smoke  # the same steps with a tiny model on the CPU (a minute or two)
#
# Python: $PYTHON if set, else ./.venv/bin/python if it exists, else python3. Packages PaGeR needs that the
# interpreter lacks (diffusers, omegaconf, ...) are installed into a venv ./.venv-gpu that sees the system
# packages (so a preinstalled CUDA torch is kept): from PyPI, or offline from wheels in $PAGER_WHEELS
# (pip download them elsewhere: see /work/.library/device/README.md on this workplace). torch is never
# installed or replaced by this script.
# Steps: golden fidelity check on the device, released-size inference (face 768 px, 2048x1024 output) in
# fp32/fp16/bf16 with and without torch.compile, SDPA vs xformers (when importable), a short training-step
# throughput, pager video frames/s at the released size; prints one table (also written to gpu_check.json). Extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
need() { "$1" - <<'EOF'
import importlib.util, sys
mods = ["torch", "diffusers", "omegaconf", "safetensors", "huggingface_hub", "accelerate", "yaml", "PIL", "psutil", "pytest"]
missing = [m for m in mods if importlib.util.find_spec(m) is None]
print(" ".join(missing))
sys.exit(1 if "torch" in missing else 0)
EOF
}
missing="$(need "$PY")" || { echo "gpu_check: $PY has no torch; install a CUDA build of torch first" >&2; exit 2; }
if [[ -n "$missing" ]]; then
  echo "gpu_check: $PY lacks: $missing -> venv .venv-gpu (system site packages kept)"
  if [[ ! -x .venv-gpu/bin/python ]]; then "$PY" -m venv --system-site-packages .venv-gpu; fi
  PY=.venv-gpu/bin/python
  if [[ -n "${PAGER_WHEELS:-}" ]]; then
    "$PY" -m pip install -q --no-index --find-links "$PAGER_WHEELS" --no-deps "$PAGER_WHEELS"/*.whl
  else
    # the package itself without dependencies, then only what is missing (never another torch)
    "$PY" -m pip install -q --no-deps -e .
    pkgs=""
    for m in $missing; do
      case "$m" in yaml) pkgs="$pkgs pyyaml";; PIL) pkgs="$pkgs pillow";; huggingface_hub) pkgs="$pkgs huggingface-hub";; *) pkgs="$pkgs $m";; esac
    done
    "$PY" -m pip install -q $pkgs
  fi
  still="$(need "$PY")"
  if [[ -n "$still" ]]; then echo "gpu_check: still missing after install: $still" >&2; exit 2; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
