"""The one base class of every error that bad input can cause: a value, path, name or file the user can fix.

The CLI's error boundary (``bioconv_timm.cli``) catches :class:`BioconvError` (and ``OSError`` on a user's
path) and prints ``bioconv <command>: error: <message>`` with exit status 2; anything else is an internal bug and
keeps its traceback. Each subclass keeps the built-in base it had (``ValueError`` or ``RuntimeError``) so callers
that caught those still do.
"""
from __future__ import annotations

__all__ = ['BioconvError', 'UserValueError', 'UserRuntimeError']


class BioconvError(Exception):
    """A problem the user can fix; the message names the bad value and says what to do."""


class UserValueError(BioconvError, ValueError):
    """A bad value (a setting, a constructor argument, a file's content)."""


class UserRuntimeError(BioconvError, RuntimeError):
    """A state of the world the user can change (a folder held by another run, a full disk, no GPU)."""
