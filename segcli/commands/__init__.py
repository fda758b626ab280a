"""Typer sub-applications mounted by `segcli.cli` (`segcli weights ...`, `segcli vocab ...`).

Each module holds `app = typer.Typer(...)`. Commands raise `segcli.errors` exceptions; the main CLI
turns them into one line on stderr and the matching exit code. Data goes to stdout, messages to
stderr.
"""
