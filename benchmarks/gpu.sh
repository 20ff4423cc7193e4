#!/usr/bin/env bash
# The GPU benchmark on a lent accelerator machine (no network there), from the repository root.
#   Here, once:  pip download --no-deps -d wheelhouse diffusers safetensors huggingface_hub regex
#                (the device image has torch, torchvision, transformers and accelerate; check its
#                 versions first with: python -c "import torch, transformers; print(...)")
#   There:       bash benchmarks/gpu.sh        (carry: wheelhouse; results in $OUT/gpu.json)
#                NAME=gpu_sdxl bash benchmarks/gpu.sh --model sdxl --no-compile    (SDXL; $OUT/gpu_sdxl.json)
set -euo pipefail
out=${OUT:-/tmp/groundiff-gpu}
mkdir -p "$out"
if compgen -G "wheelhouse/*.whl" > /dev/null; then
  python3 -m pip install --no-index --no-deps -q wheelhouse/*.whl
fi
python3 -m pip install --no-deps --no-build-isolation -q -e .
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
timeout 480 python3 -m benchmarks.gpu --device cuda --dtype "${DTYPE:-float16}" --out "$out/${NAME:-gpu}.json" "$@"
