"""`segcli weights list | pull NAME | verify [NAME] | path NAME | import FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segcli import weights as W
from segcli.errors import WeightsError

app = typer.Typer(
    help="Fetch, check and locate released weight files.\n\n"
    "Examples:\n\n"
    "  segcli weights list\n\n"
    "  segcli weights pull omg-seg-convl\n\n"
    "  HF_HUB_OFFLINE=1 segcli weights verify\n\n"
    "  segcli weights import ./omg_seg_convl.pth",
    no_args_is_help=True,
)

out = Console()  # data (tables, paths): stdout


def say(message: str) -> None:
    """A message for the user: stderr, never wrapped, never parsed as markup."""
    typer.echo(message if message.startswith("segcli") else f"segcli: {message}", err=True)


NameArg = Annotated[str, typer.Argument(help="model (e.g. omg-seg-convl) or file id (see: weights list)")]


def count(n: int, singular: str, plural: str | None = None) -> str:
    """"1 file", "2 files"."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _size(files: list[W.WeightFile]) -> str:
    if len(files) == 1:
        f = files[0]
        return f.size or (f"{f.size_bytes / 1e6:.1f} MB" if f.size_bytes else "?")
    return " + ".join(_size([f]) for f in files)


@app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List models and files of the registry, and whether they are on this machine."""
    reg = W.load_registry()
    rows = []
    for name in reg.names():
        files = list(reg.files_of(name).values())
        present = [W.find_local(f, reg) is not None for f in files]
        state = "yes" if all(present) else ("partial" if any(present) else "no")
        rows.append({
            "name": name,
            "kind": "model" if name in reg.models else "file",
            "files": [f.filename for f in files],
            "size": _size(files),
            "license": ", ".join(dict.fromkeys(f.license or "?" for f in files)),
            "source": [f.source for f in files],
            "present": state,
        })
    if json_out:
        import json

        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="segcli weights")
    for column in ("name", "kind", "files", "size", "licence", "source (Hugging Face)", "present"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "kind", "present"))
    for row in rows:
        repos = [s.removeprefix("hf://").rsplit("/", 1)[0] for s in row["source"]]
        table.add_row(row["name"], row["kind"], "\n".join(row["files"]), row["size"], row["license"],
                      "\n".join(repos), row["present"])
    out.print(table)


@app.command()
def pull(
    name: NameArg,
    force: Annotated[bool, typer.Option("--force", help="download again even if present")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Download the files of NAME from the Hugging Face Hub and verify their sha256."""
    reg = W.load_registry()
    files = reg.files_of(name)
    before = {role: W.find_local(f, reg) is not None for role, f in files.items()}
    paths = W.pull(name, progress=not quiet, force=force, registry=reg)
    for role, path in paths.items():
        verb = "present" if before[role] and not force else "fetched"
        say(f"{verb}: {files[role].id} -> {path}")
    say(f"{name}: {count(len(paths), 'file')} ready")


@app.command()
def verify(
    name: Annotated[Optional[str], typer.Argument(help="model or file (default: all registry files)")] = None,
) -> None:
    """Hash the present files and compare with the registry / recorded sha256 (files without a
    pinned sha256 must also hold the keys and shapes of their part). Exit 6 on any mismatch."""
    results = W.verify(name)
    table = Table(title="segcli weights verify")
    for column in ("file", "status", "sha256", "path"):
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "recorded": "cyan", "missing": "yellow", "mismatch": "red", "invalid": "red"}
    for r in results:
        table.add_row(r.file_id, f"[{colours[r.status]}]{r.status}[/]", (r.sha256 or "")[:16],
                      escape(str(r.path or "")))
    out.print(table)
    bad = [r for r in results if r.status in ("mismatch", "invalid")]
    if bad:
        more = f" (and {count(len(bad) - 1, 'more file')} failed)" if len(bad) > 1 else ""
        raise WeightsError(f"{bad[0].problem}{more}")
    if name is not None and any(r.status == "missing" for r in results):
        missing = next(r for r in results if r.status == "missing")
        raise WeightsError(f"missing weights file {missing.file_id}; fetch it with: "
                           f"segcli weights pull {name}")


@app.command("path")
def path_(name: NameArg) -> None:
    """Print the local path of every file of NAME, one per line (no download, no hashing)."""
    for path in W.resolve(name, check=False).values():
        typer.echo(str(path))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a weight file obtained elsewhere")],
    name: Annotated[Optional[str], typer.Option("--name", help="registry file id (or model) it is")] = None,
) -> None:
    """Copy a weight file into segcli's store after checking it: its sha256 against the registry,
    and (when no sha256 is pinned) that it loads safely with the keys and shapes of its part."""
    file_id, dest = W.import_file(file, name)
    say(f"imported {file} as {file_id} -> {dest}")
    typer.echo(str(dest))
