"""`segcli app` (being written)."""

from __future__ import annotations


def app() -> None:
    """Not written yet."""
    from segcli.errors import UsageError

    raise UsageError("segcli app is not available yet")
