"""`segcli vocab list | show | embed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segcli.errors import UsageError
from segcli.vocab import datasets as D
from segcli.vocab.parse import Vocabulary, parse_vocab, read_vocab_file

app = typer.Typer(
    help="Built-in vocabularies and CLIP class embeddings.\n\n"
    "Examples:\n\n"
    "  segcli vocab list\n\n"
    "  segcli vocab show coco\n\n"
    '  segcli vocab embed --vocab "dog|puppy,car,stuff:sky" --weights omg-seg-convl -o my.safetensors\n\n'
    "  segcli vocab embed --dataset coco --weights path/to/bundle -o coco.safetensors",
    no_args_is_help=True,
)

out = Console()


def say(message: str) -> None:
    """A message for the user: stderr, never wrapped, never parsed as markup."""
    typer.echo(message if message.startswith("segcli") else f"segcli: {message}", err=True)


VocabOpt = Annotated[Optional[str], typer.Option("--vocab", help='classes "a,b|b2,stuff:c"')]
StuffOpt = Annotated[Optional[str], typer.Option("--stuff", help="extra stuff classes, comma-separated")]
VocabFileOpt = Annotated[Optional[Path], typer.Option("--vocab-file", help="one class per line")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="built-in vocabulary (see: vocab list)")]


def count(n: int, singular: str, plural: str | None = None) -> str:
    """"1 class", "2 classes"."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def describe(v: Vocabulary) -> str:
    """"3 classes (2 things, 1 stuff)"."""
    return f"{count(len(v), 'class', 'classes')} ({count(v.num_things, 'thing')}, {v.num_stuff} stuff)"


def select_vocabulary(vocab: str | None = None, stuff: str | None = None, vocab_file: Path | None = None,
                      dataset: str | None = None) -> Vocabulary:
    """The vocabulary named by exactly one of --vocab (with optional --stuff), --vocab-file, --dataset."""
    given = [opt for opt, value in (("--vocab", vocab), ("--vocab-file", vocab_file), ("--dataset", dataset))
             if value is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --vocab, --vocab-file, --dataset" +
                         (f" (got {' and '.join(given)})" if given else ""))
    if stuff is not None and vocab is None:
        raise UsageError("--stuff goes with --vocab")
    if vocab is not None:
        return parse_vocab(vocab, stuff)
    if vocab_file is not None:
        return read_vocab_file(vocab_file)
    return D.dataset_vocabulary(dataset)


@app.command("list")
def list_() -> None:
    """List the built-in vocabularies (for --dataset) with their class counts."""
    table = Table(title="built-in vocabularies")
    for column, justify in (("name", "left"), ("classes", "right"), ("things", "right"), ("stuff", "right"),
                            ("description", "left")):
        table.add_column(column, justify=justify)
    for d in D.list_datasets():
        table.add_row(d.name, str(len(d.things) + len(d.stuff)), str(len(d.things)), str(len(d.stuff)),
                      d.description)
    out.print(table)


@app.command()
def show(
    dataset: Annotated[Optional[str], typer.Argument(help="built-in vocabulary name")] = None,
    vocab: VocabOpt = None,
    stuff: StuffOpt = None,
    vocab_file: VocabFileOpt = None,
    embeddings: Annotated[Optional[Path], typer.Option(
        "--embeddings", help="a class-embeddings file written by `segcli vocab embed -o`")] = None,
    seen: Annotated[bool, typer.Option("--seen", help="mark classes seen in training (spec §6.6)")] = False,
) -> None:
    """Print a vocabulary as the model will see it: index, kind, synonyms."""
    if embeddings is not None:
        if vocab is not None or stuff is not None or vocab_file is not None or dataset is not None:
            raise UsageError("--embeddings holds its own vocabulary: give it alone")
        from segcli.vocab.cache import load_embeddings

        v, tensor = load_embeddings(embeddings)
        k, p, d = tensor.shape
        say(f"{embeddings}: {describe(v)}, {count(p, 'synonym slot')}, {d} dims")
    else:
        v = select_vocabulary(vocab, stuff, vocab_file, dataset)
    flags = D.overlapping(v) if seen else None
    title = f"{v.name or 'vocabulary'}: {describe(v)}"
    table = Table(title=escape(title))
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("synonyms", overflow="fold")
    if seen:
        table.add_column("seen")
    for k, synonyms in enumerate(v.classes):
        row = [str(k), "thing" if v.is_thing(k) else "stuff", escape(" | ".join(synonyms))]
        if flags is not None:
            row.append("yes" if flags[k] else "no")
        table.add_row(*row)
    out.print(table)


@app.command()
def embed(
    output: Annotated[str, typer.Option("--output", "-o", help="output .safetensors file ('-' = stdout)")],
    weights: Annotated[str, typer.Option(
        "--weights", help="text tower: bundle folder (config.json + text_tower.safetensors), CLIP checkpoint "
        "file, or weights name (e.g. omg-seg-convl)")],
    vocab: VocabOpt = None,
    stuff: StuffOpt = None,
    vocab_file: VocabFileOpt = None,
    dataset: DatasetOpt = None,
    clip_model: Annotated[Optional[str], typer.Option(
        "--clip-model", help="open_clip model name when --weights is a checkpoint file")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute even if cached")] = False,
) -> None:
    """Compute CLIP class embeddings (K, P, D) of a vocabulary and write them as safetensors, with the
    vocabulary (classes, synonyms, things/stuff, category ids) and the text model in its metadata."""
    from segcli.vocab.cache import get_class_embeddings, save_embeddings, text_model_identity
    from segcli.vocab.text import resolve_text_source

    v = select_vocabulary(vocab, stuff, vocab_file, dataset)
    source = resolve_text_source(weights, clip_model)
    embeddings, hit = get_class_embeddings(v, source, cache=not no_cache)
    save_embeddings(output, embeddings, v, text_model=f"{source.name}|{text_model_identity(source)}",
                    templates=source.templates)
    k, p, d = embeddings.shape
    origin = "from cache" if hit else "computed"
    say(f"{'wrote ' + output if output != '-' else 'wrote to stdout'}: {describe(v)}, "
        f"{count(p, 'synonym slot')}, {d} dims; text embeddings {origin}")
