"""Native CPU kernels for the LC layer: ``layers/csrc/lc_cpu.c``, compiled on first use, called through ctypes.

The C file is small and needs only a C compiler (no torch headers), so it builds in about a second. It is
compiled for a *target* (:data:`TARGETS`, chosen by ``$BIOCONV_NATIVE_ARCH``; :func:`target_flags` lists
the flags):

- ``native`` (default): ``-O3 -march=native -fopenmp``, this CPU's widest vectors (AVX-512 here, NEON on
  aarch64); where the compiler rejects ``-march=native``, ``-O3 -fopenmp`` (the architecture's baseline);
- ``avx512``: ``-march=x86-64`` plus AVX2, FMA and AVX-512 F/CD/DQ/BW/VL (x86-64-v4), 16 floats per vector;
- ``avx2``: ``-march=x86-64 -mavx2 -mfma``, 8 floats per vector;
- ``generic``: ``-march=x86-64`` (SSE2 only) on x86-64, plain ``-O3`` elsewhere (NEON on aarch64), 4 floats.

``$BIOCONV_CFLAGS`` replaces a target's flags altogether (target ``custom``). The x86 targets are refused,
before anything is loaded, on a CPU whose ``/proc/cpuinfo`` lacks their instructions, and on other
architectures. The library says what it was compiled for (``lc_isa``, ``lc_vector_width``, ``lc_fma``),
and :func:`build_info` reports that with the target and why it was chosen.

The library goes into a cache folder (``$BIOCONV_CACHE_DIR``, default ``~/.cache/bioconv_timm``) as
``lc_cpu-<target>-<hash>.so``, the hash over the source, the compiler, the flags, the machine architecture
and, for ``native``, this CPU's instruction set, so a shared home folder never hands a binary to a CPU it
was not built for and the targets never collide. The build goes to a temporary file that is renamed into
place, so concurrent processes (DDP ranks, pytest workers) are safe.

A library is only loaded from a folder that this user owns and nobody else can write, and only when the
file itself is owned by this user and not group/other-writable: another local user who could write there
could plant a library whose constructor runs inside this process. A cached file that fails the check is
rebuilt; a cache folder that fails it is not used (a warning names it and the fix), nor is a cache folder
this user cannot write: the kernels are then built in ``<tmp>/bioconv_timm-<uid>/kernels``, created 0700
and verified, or when that is not private either, in a fresh ``mkdtemp`` folder for this process.

OpenMP: torch's wheels ship ``libgomp.so.1``; the kernels link the same soname, so both share one thread
pool. Each call passes ``torch.get_num_threads()``.

Which backend :func:`bioconv_timm.layers.locally_connected2d` uses is set by :func:`set_backend` or the
``BIOCONV_LC_BACKEND`` environment variable: ``auto`` (default: native on CPU fp32 when it builds, else the
torch path), ``native`` (raise if it cannot build) or ``torch``.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from .._atomic import atomic_path
from ..errors import UserValueError

__all__ = ['BACKENDS', 'TARGETS', 'NativeBuildError', 'check_backend', 'chosen_backend', 'get_backend',
           'set_backend', 'use_backend', 'load', 'available', 'unavailable_reason', 'vector_width', 'build_info',
           'requested_target', 'target_flags', 'warn_unavailable_once']

BACKENDS = ('auto', 'native', 'torch')
MAX_TAPS = 256  # kernel_h * kernel_w the kernels accept (csrc MAX_TAPS)
SOURCE = Path(__file__).with_name('csrc') / 'lc_cpu.c'
TARGETS = ('native', 'avx512', 'avx2', 'generic')
_FLAG_SETS = (
    ['-O3', '-march=native', '-fopenmp'],
    ['-O3', '-fopenmp'],          # compilers without -march=native
    ['-O3'],                      # no OpenMP: single-threaded kernels
)
_X86_MACHINES = ('x86_64', 'amd64', 'i386', 'i686', 'x86')
# target: (flags after -O3 on x86, the /proc/cpuinfo flags the CPU needs to run the result)
_X86_TARGETS = {
    'avx512': (['-march=x86-64', '-mavx2', '-mfma', '-mavx512f', '-mavx512cd', '-mavx512dq', '-mavx512bw',
                '-mavx512vl'], ('avx2', 'fma', 'avx512f', 'avx512cd', 'avx512dq', 'avx512bw', 'avx512vl')),
    'avx2': (['-march=x86-64', '-mavx2', '-mfma'], ('avx2', 'fma')),
    'generic': (['-march=x86-64'], ()),
}


def _is_x86(machine: Optional[str] = None) -> bool:
    return (machine if machine is not None else platform.machine()).lower() in _X86_MACHINES


def requested_target() -> Tuple[str, str]:
    """``(target, source)``: the target the kernels are built for and what chose it -- ``('custom',
    'BIOCONV_CFLAGS')``, ``(name, 'BIOCONV_NATIVE_ARCH')`` or ``('native', 'default')``. A UserValueError
    for an unknown name, or for both variables set at once."""
    arch = os.environ.get('BIOCONV_NATIVE_ARCH', '').strip().lower()
    custom = os.environ.get('BIOCONV_CFLAGS', '').strip()
    if arch and custom:
        raise UserValueError(f'BIOCONV_NATIVE_ARCH={arch} and BIOCONV_CFLAGS={custom!r} are both set; the '
                             'flags would replace the target: unset one of them')
    if custom:
        return 'custom', 'BIOCONV_CFLAGS'
    if not arch:
        return 'native', 'default'
    if arch not in TARGETS:
        raise UserValueError(f'unknown BIOCONV_NATIVE_ARCH {arch!r}; choose one of {", ".join(TARGETS)}')
    return arch, 'BIOCONV_NATIVE_ARCH'


def target_flags(target: str, machine: Optional[str] = None) -> Tuple[List[str], ...]:
    """The compiler flag sets tried in order for ``target`` (one of :data:`TARGETS`, or ``'custom'``: the
    flags of ``$BIOCONV_CFLAGS``) on ``machine`` (default: this one's ``platform.machine()``); each but
    the last with ``-fopenmp``, the last without (single-threaded kernels, for compilers without OpenMP).
    A NativeBuildError for an x86 target on another architecture."""
    if target == 'native':
        return _FLAG_SETS
    if target == 'custom':
        flags = shlex.split(os.environ.get('BIOCONV_CFLAGS', ''))
    elif target in _X86_TARGETS:
        if _is_x86(machine):
            flags = ['-O3', *_X86_TARGETS[target][0]]
        elif target == 'generic':  # the architecture's baseline: NEON on aarch64
            flags = ['-O3']
        else:
            raise NativeBuildError(f'BIOCONV_NATIVE_ARCH={target} is an x86 target and this machine is '
                                   f'{machine or platform.machine()}; use native or generic')
    else:
        raise UserValueError(f'unknown native target {target!r}; choose one of {", ".join(TARGETS)}')
    return (flags + ['-fopenmp'], flags)


def _cpu_flags() -> Optional[set]:
    """The instruction-set flags of /proc/cpuinfo's first CPU (x86 ``flags``, ARM ``Features``); None where
    there is no such file (then the CPU is not checked)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        return None
    return None


def _check_cpu(target: str) -> str:
    """Raise NativeBuildError when this CPU lacks an instruction of ``target``; else say what was checked."""
    needs = _X86_TARGETS.get(target, (None, ()))[1]
    if not needs:
        return ''
    have = _cpu_flags()
    if have is None:
        return 'CPU not checked (no /proc/cpuinfo)'
    missing = [f for f in needs if f not in have]
    if missing:
        raise NativeBuildError(f'BIOCONV_NATIVE_ARCH={target}: this CPU lacks {" ".join(missing)}, so the '
                               f'{target} kernels would crash it; use native (this CPU\'s best) or generic')
    return f'this CPU has {" ".join(needs)}'


_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_info: dict = {}
_error: Optional[str] = None
_backend: Optional[str] = None


class NativeBuildError(RuntimeError):
    """The native kernels could not be compiled or loaded."""


def check_backend(name: str) -> str:
    """``name`` when it is one of :data:`BACKENDS`; a UserValueError that lists them otherwise."""
    if name not in BACKENDS:
        raise UserValueError(f'unknown LC backend {name!r}; choose one of {", ".join(BACKENDS)} '
                         '(set with bioconv_timm.layers.native.set_backend or BIOCONV_LC_BACKEND)')
    return name


def get_backend() -> str:
    """The LC backend in force: set_backend's value, else ``$BIOCONV_LC_BACKEND``, else ``'auto'``."""
    if _backend is not None:
        return _backend
    return check_backend(os.environ.get('BIOCONV_LC_BACKEND', 'auto').strip().lower() or 'auto')


def chosen_backend() -> str:
    """set_backend's or use_backend's choice, or '' when none is in force (then ``$BIOCONV_LC_BACKEND``
    decides when the LC operator runs). The LC layer passes this to its operator: torch.compile guards on
    it, so a compiled model follows use_backend, and still reads the environment variable at run time."""
    return _backend or ''


def set_backend(name: Optional[str]) -> None:
    """Choose the LC backend for this process: ``'auto'``, ``'native'``, ``'torch'``; ``None`` goes back to
    the environment variable."""
    global _backend
    _backend = None if name is None else check_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed forward passes on backend ``name`` (their backward follows the forward's choice; a
    ``torch.compile``'d model recompiles for it)."""
    global _backend
    previous, _backend = _backend, check_backend(name)
    try:
        yield
    finally:
        _backend = previous


def _cache_dir() -> Path:
    root = os.environ.get('BIOCONV_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'bioconv_timm')
    return Path(root) / 'kernels'


def _compiler() -> Optional[str]:
    for name in filter(None, (os.environ.get('CC'), 'cc', 'gcc', 'clang')):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags (what -march=native compiles for)."""
    text = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'model name', 'Features', 'CPU part')):
                    text += line
                if line.strip() == '':
                    break
    except OSError:
        pass
    return platform.machine() + platform.processor() + text


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, '--version'], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ''


def _uid() -> Optional[int]:
    return os.getuid() if hasattr(os, 'getuid') else None


def _unsafe_reason(st: os.stat_result) -> Optional[str]:
    """Why a file or folder with this stat could have been written by another local user; None if only we can."""
    uid = _uid()
    if uid is None:  # no POSIX owners (Windows): nothing to check
        return None
    if st.st_uid != uid:
        return f'is owned by uid {st.st_uid}, not by this user (uid {uid})'
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f'is writable by group or others (mode {stat.S_IMODE(st.st_mode):03o})'
    return None


def _cache_warning(message: str) -> None:
    """Warn that a cache folder was skipped as not private; build_info()['cache_warning'] keeps the reason."""
    _info['cache_warning'] = ' '.join(filter(None, (_info.get('cache_warning'), message)))
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _temp_cache_dir() -> Path:
    """``<tmp>/bioconv_timm-<uid>/kernels``, created 0700 and verified (the shared temp folder lets anyone
    create that name first); when it is not private, a fresh mkdtemp folder removed at exit."""
    uid = _uid()
    base = Path(tempfile.gettempdir()) / f'bioconv_timm-{uid if uid is not None else "user"}'
    folder = base / 'kernels'
    problem = None
    try:
        for path in (base, folder):
            path.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(path)  # lstat: a symlink planted under the temp folder is not followed
            problem = 'is not a folder' if not stat.S_ISDIR(st.st_mode) else _unsafe_reason(st)
            if problem is not None:
                problem = f'{path} {problem}'
                break
    except OSError as exc:
        problem = f'{folder} cannot be used ({exc})'
    if problem is None:
        return folder
    private = Path(tempfile.mkdtemp(prefix=f'{base.name}-'))
    atexit.register(shutil.rmtree, str(private), True)
    _cache_warning(f'the native LC kernel folder {problem}, so another user could plant a library there; '
                   f'not loading from it, building in {private} for this process instead. '
                   f'Fix: remove {base} (or set BIOCONV_CACHE_DIR to a folder that only you can write)')
    return private


def _writable_cache_dir() -> Path:
    """The cache folder when this user can write it and nobody else can; else a private temporary one."""
    folder = _cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
        st = os.stat(folder)  # follows a symlinked ~/.cache: the folder it points to is what must be private
    except OSError:
        writable = False
    if not writable:  # a read-only cache (e.g. home): quietly build in a private temp folder
        return _temp_cache_dir()
    problem = 'is not a folder' if not stat.S_ISDIR(st.st_mode) else _unsafe_reason(st)
    if problem is None:
        return folder
    if st.st_uid == _uid():
        fix = f'run `chmod go-w {folder}`, or set BIOCONV_CACHE_DIR to a folder that only you can write'
    else:
        fix = 'set BIOCONV_CACHE_DIR to a folder that you own and only you can write'
    private = _temp_cache_dir()
    _cache_warning(f'the native LC kernel cache folder {folder} {problem}, so another user could plant a '
                   f'library there; not loading from it, building in {private} instead. Fix: {fix}')
    return private


def _trusted_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a symlink) that only this user could have written."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and _unsafe_reason(st) is None


class _CompileFailed(Exception):
    """The compiler exited with an error (its stderr is the message)."""


def _build(cc: str, folder: Path, rebuild: bool = False) -> Path:
    """Path of the compiled kernels in ``folder`` (a private one: :func:`_writable_cache_dir`): the cached
    file, or a fresh build (``rebuild`` replaces the cached one), for :func:`requested_target`."""
    name, _ = requested_target()
    source = SOURCE.read_bytes()
    version = _compiler_version(cc)
    # only a native build depends on the CPU it was built on; the named targets run on any CPU that has
    # their instructions, so a shared cache serves all of them one binary
    machine = _cpu_signature() if name in ('native', 'custom') else platform.machine()
    errors, rejected = [], []
    for flags in target_flags(name):
        key = hashlib.sha256(b'\0'.join([source, cc.encode(), version.encode(), ' '.join(flags).encode(),
                                         name.encode(), machine.encode()])).hexdigest()[:16]
        target = folder / f'lc_cpu-{name}-{key}.so'
        if not rebuild and _trusted_file(target):  # anything else (e.g. mode 0666) is rebuilt, never loaded
            _info.update(path=str(target), flags=flags, compiler=cc, cached=True, rejected_flags=rejected)
            return target
        cmd = [cc, *flags, '-std=gnu11', '-shared', '-fPIC', str(SOURCE), '-o']
        try:
            # 0755 whatever the umask (a umask of 0 would leave the library world-writable)
            with atomic_path(target, mode=0o755) as tmp:
                proc = subprocess.run([*cmd, str(tmp)], capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise _CompileFailed(proc.stderr.strip()[:1000])
            _info.update(path=str(target), flags=flags, compiler=cc, cached=False, rejected_flags=rejected)
            return target
        except _CompileFailed as exc:
            errors.append(f'{" ".join(cmd)} ...:\n{exc}')
            rejected.append(' '.join(flags))
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f'{" ".join(cmd)} ...: {exc}')
            rejected.append(' '.join(flags))
    raise NativeBuildError('could not compile the native LC kernels:\n' + '\n'.join(errors))


def _open(cc: str) -> ctypes.CDLL:
    name, source = requested_target()
    _info.update(target=name, target_source=source, cpu_check=_check_cpu(name))
    folder = _writable_cache_dir()
    path = _build(cc, folder)
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        if not _info.get('cached'):
            raise
        return ctypes.CDLL(str(_build(cc, folder, rebuild=True)))  # a damaged cached file: build it again


_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_INT = ctypes.c_int
_SIGNATURES = {  # name: (argument types, return type)
    'lc_forward': ([_PTR] * 3 + [_I64] * 15 + [_INT], ctypes.c_int),
    'lc_backward_input': ([_PTR] * 3 + [_I64] * 15 + [_INT], None),
    'lc_backward_input_any': ([_PTR] * 3 + [_I64] * 15 + [_INT], ctypes.c_int),
    'lc_backward_weight': ([_PTR] * 3 + [_I64] * 15 + [_INT], None),
    'lc_backward_weight_any': ([_PTR] * 3 + [_I64] * 16 + [_INT], None),
    'lc_dw_forward': ([_PTR] * 3 + [_I64] * 14 + [_INT], None),
    'lc_dw_backward_input': ([_PTR] * 3 + [_I64] * 14 + [_INT], None),
    'lc_dw_backward_weight': ([_PTR] * 3 + [_I64] * 14 + [_INT], None),
}


def load() -> ctypes.CDLL:
    """Compile (once per machine, cached) and load the kernels. Raises :class:`NativeBuildError`."""
    global _lib, _error
    if _lib is not None:
        return _lib
    if _error is not None:
        raise NativeBuildError(_error)
    with _lock:
        if _lib is None and _error is None:
            try:
                import torch  # noqa: F401  (load torch's libgomp first, so the kernels share its pool)
                cc = _compiler()
                if cc is None:
                    raise NativeBuildError('no C compiler found (tried $CC, cc, gcc, clang); install gcc, '
                                           'or set BIOCONV_LC_BACKEND=torch')
                lib = _open(cc)
                for name, (argtypes, restype) in _SIGNATURES.items():
                    fn = getattr(lib, name)
                    fn.argtypes, fn.restype = argtypes, restype
                lib.lc_vector_width.restype = ctypes.c_int
                lib.lc_isa.restype = ctypes.c_char_p
                lib.lc_fma.restype = ctypes.c_int
                lib.lc_vector_registers.restype = ctypes.c_int
                lib.lc_forward_dot_min_kernel_bytes.restype = ctypes.c_int64
                _info.update(vector_width=lib.lc_vector_width(), isa=lib.lc_isa().decode(),
                             fma=bool(lib.lc_fma()), vector_registers=lib.lc_vector_registers(),
                             forward_dot_min_kernel_bytes=lib.lc_forward_dot_min_kernel_bytes())
                _info['why'] = _why(_info)
                _lib = lib
            except (NativeBuildError, OSError) as exc:
                _error = str(exc)
    if _lib is None:
        raise NativeBuildError(_error)
    return _lib


def _why(info: dict) -> str:
    """One sentence: the target, what chose it, the flags that built it and what they compiled to."""
    target, source = info['target'], info['target_source']
    chosen = {'default': 'the default', 'BIOCONV_NATIVE_ARCH': f'BIOCONV_NATIVE_ARCH={target}',
              'BIOCONV_CFLAGS': 'BIOCONV_CFLAGS'}[source]
    text = (f'target {target} ({chosen}): {" ".join(info["flags"])} on {platform.machine()} compiled to the '
            f'{info["isa"]} kernels, {info["vector_width"]} floats per vector'
            f'{", fused multiply-add" if info["fma"] else ""}, tiles for {info["vector_registers"]} vector registers')
    if info.get('rejected_flags'):  # an earlier flag set failed, e.g. a compiler without -march=native
        text += f'; the compiler rejected {" and ".join(info["rejected_flags"])}'
    if info.get('cpu_check'):
        text += f'; {info["cpu_check"]}'
    if '-fopenmp' not in info['flags']:
        text += '; without OpenMP (single-threaded)'
    return text


def available() -> bool:
    """True when the native kernels build and load on this machine (builds them on first call)."""
    try:
        load()
        return True
    except NativeBuildError:
        return False


def unavailable_reason() -> Optional[str]:
    """Why the kernels could not be built, or None."""
    return None if available() else _error


def vector_width() -> int:
    """Floats per SIMD vector the kernels were compiled for: 16 with AVX-512, 8 with AVX/AVX2, 4 otherwise
    (SSE2, NEON, generic)."""
    load()
    return int(_info['vector_width'])


def build_info() -> dict:
    """Backend, compiler, flags, cache path and what was built (for benchmark metadata): ``target`` (one of
    :data:`TARGETS` or ``'custom'``), ``target_source`` (``'default'``, ``'BIOCONV_NATIVE_ARCH'`` or
    ``'BIOCONV_CFLAGS'``), ``isa`` (what the library was compiled for: ``avx512``, ``avx2+fma``, ``avx``,
    ``sse2``, ``neon``, ...), ``vector_width``, ``fma``, ``vector_registers`` (the register count the
    micro-kernel tiles are sized for: 32 with AVX-512 and on aarch64, else 16),
    ``forward_dot_min_kernel_bytes`` (a location's kernel, Cout x kh x kw x Cin floats, from which the forward
    uses it as stored instead of a transposed copy, when Cin is a multiple of the vector width),
    ``cpu_check`` and ``why``, a sentence with all of it."""
    info = {'backend': get_backend(), 'available': available()}
    info.update(_info)
    if _error:
        info['error'] = _error
    return info


_warned = False


def warn_unavailable_once() -> None:
    """One RuntimeWarning per process that the layer fell back to its torch backend, and why."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f'native LC kernels unavailable, using the slower torch path: {_error} '
                      '(set BIOCONV_LC_BACKEND=torch to silence this)', RuntimeWarning, stacklevel=3)
