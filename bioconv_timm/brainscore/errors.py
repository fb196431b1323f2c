"""The base error of the Brain-Score tools: a problem the user can fix, printed by the CLI in one block
(``data.MissingBenchmarkData`` and ``submission.SubmissionError`` are the two kinds with more to say)."""
from __future__ import annotations

from ..errors import UserRuntimeError

__all__ = ['BrainScoreError']


class BrainScoreError(UserRuntimeError):
    """A problem the user can fix (missing extra, missing data, bad arguments); the CLI prints it in one block."""
