"""The LC layer vs Conv2d (NCHW and channels-last) vs the authors' unfold + einsum layout, and LC vs conv
training steps: the same benchmark, flags and output as `bioconv bench` (bioconv_timm.bench).

    python scripts/bench_lc.py --quick                     # ~2-3 min on 2 idle CPU cores
    python scripts/bench_lc.py --json bench.json           # all paper shapes + the ResNet20 training step
    python scripts/bench_lc.py --device cuda --amp bf16    # GPU (see scripts/gpu_bench.sh)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bioconv_timm.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(['bench', *sys.argv[1:]]))
