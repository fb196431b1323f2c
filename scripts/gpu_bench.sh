#!/usr/bin/env bash
# The CUDA benchmark of issue 7 as one command, for a session lent a GPU (one H100):
#   1. the CUDA unit tests of the benchmark and the LC layer (tests/test_bench.py, tests/test_layers.py -k cuda);
#   2. `python -m bioconv_timm.cli bench --device cuda --amp bf16`, then the same with fp16: the LC layer vs
#      Conv2d (NCHW, channels-last) vs the unfold + einsum baseline at every paper shape (ResNet20 stages
#      B=128, TinyImageNet 48x48 B=128, 0.5x ResNet18 at 224 B=32), forward and forward+backward, with the
#      CUDA allocator's peak memory; and the training steps conv_resnet20 vs lc_resnet20 (B=128) and
#      conv_resnet18_half vs lc_resnet18_half (B=256, autocast, fp16 with a GradScaler; fused AdamW), with
#      the absolute peak memory of a step.
#
# usage:  bash scripts/gpu_bench.sh [OUT_DIR]      (default: $OUT on the device machine, else ./bench-gpu)
# device: run(command="bash scripts/gpu_bench.sh", timeout_s=580)   expected: ~4-6 minutes on an H100
#
# Files written (8 at most, all of them come back from $OUT): env.txt (date, nvidia-smi, versions), tests.log,
# gpu_bench.log (the printed tables), bench_cuda_bf16.json, bench_cuda_fp16.json, bench_cuda_bf16_chunk4mib.json
# (the 0.5x ResNet18 step with the torch backend's old 4 MiB patch chunks, to compare with the default).
# Wheels in ./.whl (e.g. a pinned timm: see the device README) are installed into /tmp/site first when present.
# Override: PYTHON=python3.12, STEP_TIMEOUT=seconds per benchmark run (default 200), CHUNK_TIMEOUT (default 150),
# EXTRA="--repeats 5".
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench-gpu}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
step_timeout="${STEP_TIMEOUT:-200}"

if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  nvidia-smi
  "$py" - <<'EOF'
import torch, timm
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA DEVICE')
print('timm', timm.__version__)
EOF
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

status=0
echo "== CUDA unit tests"
timeout 120 "$py" -m pytest -q -p no:cacheprovider tests/test_bench.py tests/test_layers.py -k cuda 2>&1 \
  | tee "$out/tests.log" || status=1

for amp in bf16 fp16; do
  echo "== bench --device cuda --amp $amp" | tee -a "$out/gpu_bench.log"
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  timeout "$step_timeout" "$py" -m bioconv_timm.bench --device cuda --amp "$amp" \
    --json "$out/bench_cuda_$amp.json" ${EXTRA:-} 2>&1 | tee -a "$out/gpu_bench.log" || status=1
done
# The torch backend's patch-chunk budget on CUDA (layers.chunk_bytes): the default (1 GiB here) against the
# 4 MiB CPU budget that CUDA used before, on the 0.5x ResNet18 step alone. Last, so that a timeout loses nothing.
echo "== chunk budget: lc_resnet18_half step, bf16, BIOCONV_LC_CHUNK_MIB=4" | tee -a "$out/gpu_bench.log"
BIOCONV_LC_CHUNK_MIB=4 timeout "${CHUNK_TIMEOUT:-150}" "$py" -m bioconv_timm.bench --device cuda --amp bf16 \
  --shapes none --models resnet18_half --json "$out/bench_cuda_bf16_chunk4mib.json" 2>&1 \
  | tee -a "$out/gpu_bench.log" || status=1
echo "== done (status $status): $out"
exit "$status"
