import os

import pytest
import torch
from hypothesis import settings

# The fuzz tests draw the same examples on every run (derandomized), so a CI run is a repeatable check, not a
# lottery; `HYPOTHESIS_PROFILE=explore pytest tests/test_fuzz_*.py` draws new ones (and more of them) to look
# for escapes.
settings.register_profile('repeatable', derandomize=True, deadline=None, database=None)
settings.register_profile('explore', deadline=None, max_examples=500)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'repeatable'))


if os.environ.get('PYTEST_XDIST_WORKER'):
    # pytest-xdist runs a worker per core (pyproject addopts): one torch thread each fills the machine, where
    # torch's default (a thread per core in every worker) would oversubscribe it
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference_lc(x: torch.Tensor, weight: torch.Tensor, stride=(1, 1), padding=(0, 0), bias=None) -> torch.Tensor:
    """Slow, obviously-correct locally connected layer: one dot product per output location.

    x: (B, Cin, H, W); weight: (out_h, out_w, Cout, kh, kw, Cin); bias: (Cout, out_h, out_w).
    """
    out_h, out_w, cout, kh, kw, cin = weight.shape
    xp = torch.nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    rows = []
    for y in range(out_h):
        cols = []
        for xx in range(out_w):
            patch = xp[:, :, y * stride[0]:y * stride[0] + kh, xx * stride[1]:xx * stride[1] + kw]  # B, Cin, kh, kw
            kernel = weight[y, xx]  # Cout, kh, kw, Cin
            cols.append(torch.einsum('biuv,ouvi->bo', patch, kernel))
        rows.append(torch.stack(cols, dim=-1))
    out = torch.stack(rows, dim=-2)
    if bias is not None:
        out = out + bias
    return out
