"""The error publishing raises for a run or checkpoint that cannot go to the Hub."""
from __future__ import annotations

from ..errors import UserRuntimeError

__all__ = ['PublishError']


class PublishError(UserRuntimeError):
    """The run folder or checkpoint cannot be published as the named model."""
