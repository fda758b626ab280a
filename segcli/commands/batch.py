"""`segcli batch` (being written)."""

from __future__ import annotations


def batch() -> None:
    """Not written yet."""
    from segcli.errors import UsageError

    raise UsageError("segcli batch is not available yet")
