"""User-facing errors. Each kind has its own exit code; the CLI prints one line per error.

Raise these anywhere below the CLI; `segcli.cli` turns them into `segcli: error: <message>`
on stderr and exits with `exit_code` (SEGCLI_DEBUG=1 shows the traceback instead).
"""

from __future__ import annotations


class SegcliError(Exception):
    exit_code = 1


class UsageError(SegcliError):
    """Malformed option value (bad format name, malformed prompt, empty vocabulary...)."""

    exit_code = 2


class InputNotFoundError(SegcliError):
    exit_code = 3


class UnreadableInputError(SegcliError):
    """The file exists but cannot be decoded, has zero frames, or a folder holds no images."""

    exit_code = 4


class OutputError(SegcliError):
    """The output path cannot be written."""

    exit_code = 5


class WeightsError(SegcliError):
    """Weights missing, mismatched keys, unsafe checkpoint, checksum mismatch."""

    exit_code = 6


class PromptError(SegcliError):
    """A prompt outside the frame, a mask of the wrong size, a prompt frame past the end."""

    exit_code = 7


class VocabularyError(SegcliError):
    exit_code = 8


class DownloadError(SegcliError):
    exit_code = 9


class StreamError(SegcliError):
    """A live or remote source could not be reached, or dropped mid-way (results up to that
    point are complete and written)."""

    exit_code = 10


class Interrupted(BaseException):
    """SIGINT/SIGTERM while a job runs (a BaseException, like KeyboardInterrupt): the CLI maps it
    to exit 128 + the signal number (130, 143)."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number
