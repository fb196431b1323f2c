"""A published model that checks itself: reference tensors written next to the weights, and :func:`verify`.

``bioconv publish`` writes ``test/rand_tensors.safetensors`` into the Hub folder, the file and keys timm's own
``test_model_inference`` reads from a Hub repo (``input``, and the model's ``output``, ``features`` and
``pre_logits`` on it): a seeded random batch at the model's input size and what the published model computes on
it (float32, CPU, eval mode). Its metadata records the SHA-256 of ``model.safetensors``, the tolerances and the
versions that wrote it. 12 KB for the 1x24x24 ResNet20s (about 0.66 MB for a 3x224x224 ResNet18-half, most of it
the input).

:func:`verify` loads the model through timm exactly as a user does (``hf-hub:ORG/NAME`` from the Hub or its
cache, ``local-dir:PATH`` from a folder), reruns the input and compares every tensor with
``|actual - reference| <= atol + rtol * |reference|`` (timm's tolerances: atol 1e-4, rtol 1e-3, which absorb the
last-bit differences between CPUs and LC backends but not a changed weight), and compares the weights file's
SHA-256 with the recorded one. A mismatch raises :class:`VerifyError` naming the largest difference.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .errors import UserRuntimeError

__all__ = ['REFERENCE_FILE', 'REFERENCE_KEYS', 'DEFAULT_ATOL', 'DEFAULT_RTOL', 'VerifyError', 'VerifyResult',
           'reference_tensors', 'write_reference', 'verify', 'file_sha256']

REFERENCE_FILE = 'test/rand_tensors.safetensors'  # where timm's test_model_inference looks in a Hub repo
REFERENCE_KEYS = ('input', 'output', 'features', 'pre_logits')
WEIGHTS_FILE = 'model.safetensors'
DEFAULT_ATOL = 1e-4  # the tolerances of timm's test_model_inference
DEFAULT_RTOL = 1e-3
REFERENCE_SEED = 0
REFERENCE_BATCH = 1  # as timm's reference tensors: the file stays small (12 KB for a 1x24x24 ResNet20)


class VerifyError(UserRuntimeError):
    """A downloaded or local model that does not reproduce its published reference outputs, or that cannot be
    checked (no reference file, unreadable weights)."""


@dataclass
class VerifyResult:
    """What :func:`verify` compared. ``max_abs_diff`` and ``max_excess`` are per reference key; ``max_excess`` is
    the largest ``|actual - reference| - (atol + rtol * |reference|)`` (<= 0 everywhere when within tolerance)."""
    source: str
    reference_file: str
    weights_file: Optional[str]
    atol: float
    rtol: float
    max_abs_diff: Dict[str, float] = field(default_factory=dict)
    max_excess: Dict[str, float] = field(default_factory=dict)
    weights_sha256: Optional[str] = None
    expected_sha256: Optional[str] = None

    @property
    def outputs_match(self) -> bool:
        return bool(self.max_excess) and all(v <= 0 for v in self.max_excess.values())

    @property
    def hash_matches(self) -> Optional[bool]:
        """None when there is no recorded hash or the hash was not checked."""
        if self.expected_sha256 is None or self.weights_sha256 is None:
            return None
        return self.weights_sha256 == self.expected_sha256

    @property
    def ok(self) -> bool:
        return self.outputs_match and self.hash_matches is not False

    def summary(self) -> str:
        """One line: the verdict, the largest difference per tensor and the hash check."""
        diffs = ', '.join(f'{k} {v:.2e}' for k, v in self.max_abs_diff.items())
        digest = {None: 'not checked', True: 'matches', False: 'DIFFERS'}[self.hash_matches]
        return (f'{self.source}: {"OK" if self.ok else "MISMATCH"}; max |difference| {diffs} '
                f'(atol {self.atol:g}, rtol {self.rtol:g}); weights SHA-256 {digest}')


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _run(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The model's output, unpooled features and pre-logits on ``x`` (as timm's inference test computes them)."""
    with torch.inference_mode():
        output = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    return dict(output=output, features=features, pre_logits=pre_logits)


def reference_tensors(model: torch.nn.Module, seed: int = REFERENCE_SEED,
                      batch_size: int = REFERENCE_BATCH) -> Dict[str, torch.Tensor]:
    """{input, output, features, pre_logits} of ``model`` (put in eval mode, on the CPU in float32) on a seeded
    standard-normal batch at its input size (``model.pretrained_cfg['input_size']``)."""
    model = model.eval().float().cpu()
    input_size = tuple(model.pretrained_cfg['input_size'])
    x = torch.randn((batch_size, *input_size), generator=torch.Generator().manual_seed(seed))
    out = {'input': x}
    out.update(_run(model, x))
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def write_reference(model: torch.nn.Module, folder: Union[str, Path], weights_file: Union[str, Path]) -> Path:
    """Write ``folder/test/rand_tensors.safetensors`` for ``model``, recording the SHA-256 of ``weights_file``
    (the published ``model.safetensors``); returns the file written."""
    import timm
    from safetensors.torch import save_file

    from . import __version__ as bioconv_version

    path = Path(folder) / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = dict(format='pt', weights_file=WEIGHTS_FILE, weights_sha256=file_sha256(weights_file),
                    atol=repr(DEFAULT_ATOL), rtol=repr(DEFAULT_RTOL), seed=str(REFERENCE_SEED),
                    device='cpu', dtype='float32', bioconv_timm=str(bioconv_version), timm=timm.__version__,
                    torch=torch.__version__)
    save_file(reference_tensors(model), str(path), metadata=metadata)
    return path


def _split_source(source: str) -> Tuple[str, str]:
    """'hf-hub:ORG/NAME' -> ('hf-hub', 'ORG/NAME'); 'local-dir:PATH' or an existing folder -> ('local-dir', PATH)."""
    scheme, sep, rest = str(source).partition(':')
    if sep and scheme in ('hf-hub', 'hf_hub') and rest:
        return 'hf-hub', rest
    if sep and scheme == 'local-dir' and rest:
        return 'local-dir', rest
    if Path(source).is_dir():
        return 'local-dir', str(source)
    raise VerifyError(f'cannot verify {source!r}: pass hf-hub:ORG/NAME (a published repo, from the Hub or its '
                      'cache) or local-dir:PATH (a folder written by `bioconv publish --dry-run`).')


def _locate(scheme: str, where: str, filename: str, required: bool) -> Optional[Path]:
    """The local path of ``filename`` of the source (downloaded into the Hub cache for hf-hub:), or None."""
    if scheme == 'local-dir':
        path = Path(where) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    repo_id, _, revision = where.partition('@')
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision or None))
    except (LocalEntryNotFoundError, OSError) as exc:  # offline and not cached, or no network (before the below:
        if not required:                                # LocalEntryNotFoundError is also an EntryNotFoundError)
            return None
        raise VerifyError(f'cannot fetch {filename} of hf-hub:{where}: {exc}') from exc
    except EntryNotFoundError:  # the repo has no such file
        return None


def verify(source: str, *, atol: Optional[float] = None, rtol: Optional[float] = None,
           check_hash: bool = True, raise_on_mismatch: bool = True) -> VerifyResult:
    """Load ``source`` with ``timm.create_model(source, pretrained=True)`` and check it against its published
    reference tensors (``test/rand_tensors.safetensors``).

    Args:
        source: ``hf-hub:ORG/NAME[@REVISION]`` (from the Hub, or offline from the Hugging Face cache) or
            ``local-dir:PATH`` (a folder as ``bioconv publish --dry-run`` writes it; a bare folder path works too).
        atol, rtol: an element passes when ``|actual - reference| <= atol + rtol * |reference|``; default timm's
            1e-4 and 1e-3.
        check_hash: also compare the SHA-256 of ``model.safetensors`` with the one recorded at publishing.
        raise_on_mismatch: raise :class:`VerifyError` when a tensor or the hash differs (else return the result
            with ``ok`` False).

    Raises:
        VerifyError: a bad source, no reference file, weights that cannot be loaded, or (with
            ``raise_on_mismatch``) outputs outside the tolerance or another weights file.
    """
    import timm
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from . import models as _models  # noqa: F401  (registers the models with timm)

    atol = DEFAULT_ATOL if atol is None else float(atol)
    rtol = DEFAULT_RTOL if rtol is None else float(rtol)
    if not (math.isfinite(atol) and atol >= 0 and math.isfinite(rtol) and rtol >= 0):
        raise VerifyError(f'atol and rtol must be finite and >= 0, got atol={atol}, rtol={rtol}')
    scheme, where = _split_source(source)
    source = f'{scheme}:{where}'
    if scheme == 'local-dir' and not Path(where).is_dir():
        raise VerifyError(f'{source}: {where} is not a folder; pass the folder `bioconv publish --dry-run` wrote.')
    reference_path = _locate(scheme, where, REFERENCE_FILE, required=True)
    if reference_path is None:
        raise VerifyError(f'{source} has no {REFERENCE_FILE}, so it cannot be checked: it was published without '
                          'reference tensors (by an older bioconv-timm, or not by `bioconv publish`).')
    try:
        reference = load_file(str(reference_path))
        with safe_open(str(reference_path), framework='pt') as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise VerifyError(f'cannot read {reference_path}: {exc}; the reference file is truncated or corrupt, '
                          'download it again.') from exc
    missing = [k for k in REFERENCE_KEYS if k not in reference]
    if missing:
        raise VerifyError(f'{reference_path} lacks {", ".join(missing)}; it is not a bioconv reference file.')

    try:
        model = timm.create_model(source, pretrained=True)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        # the source is user input: a missing config, a corrupt or mismatched weights file all end here
        raise VerifyError(f'cannot load {source} with timm: {exc}') from exc
    actual = _run(model.eval().float().cpu(), reference['input'])

    weights_path = _locate(scheme, where, WEIGHTS_FILE, required=False)
    result = VerifyResult(source=source, reference_file=str(reference_path),
                          weights_file=str(weights_path) if weights_path else None, atol=atol, rtol=rtol,
                          expected_sha256=metadata.get('weights_sha256') if check_hash else None)
    problems = []
    for key in REFERENCE_KEYS[1:]:
        ref, got = reference[key].float(), actual[key].float()
        if got.shape != ref.shape:
            problems.append(f'{key} has shape {tuple(got.shape)}, the reference {tuple(ref.shape)}')
            result.max_abs_diff[key] = math.inf
            result.max_excess[key] = math.inf
            continue
        diff = (got - ref).abs()
        # NaN in the output counts as an infinite difference
        diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
        result.max_abs_diff[key] = float(diff.max())
        result.max_excess[key] = float((diff - (atol + rtol * ref.abs())).max())
    if check_hash and weights_path is not None and result.expected_sha256:
        result.weights_sha256 = file_sha256(weights_path)

    if raise_on_mismatch and not result.ok:
        worst = max(result.max_abs_diff, key=lambda k: result.max_excess[k])
        parts = problems or [f'max |difference| {result.max_abs_diff[worst]:.3g} in {worst} (allowed: atol {atol:g} + '
                             f'rtol {rtol:g} x |reference|)' if not result.outputs_match else
                             f'outputs within tolerance (max |difference| {result.max_abs_diff[worst]:.3g} in {worst})']
        if result.hash_matches is False:
            parts.append(f'{WEIGHTS_FILE} has SHA-256 {result.weights_sha256}, the published one '
                         f'{result.expected_sha256}')
        raise VerifyError(f'{source} is not the published model: ' + '; '.join(parts) + '. The weights file is '
                          'corrupt or was changed: download it again (huggingface_hub: force_download=True) or '
                          'publish it again.')
    return result
