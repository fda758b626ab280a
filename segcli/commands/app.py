"""`segcli app`: a local page to click on objects, see their masks at once and track them.

Mounted by segcli.cli as a single command:  app.command("app")(app_cmd.app)
The server, the page and the per-frame feature cache live in segcli.webapp.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def app(
    input: Annotated[Optional[str], typer.Argument(
        metavar="[VIDEO|IMAGE|FOLDER]", help="what to open: a video, an image, a folder of images (the frames "
        "of one video) or a folder of videos; without it, upload in the page")] = None,
    weights: Annotated[str, typer.Option("--weights", "-w", metavar="NAME|FILE|DIR", help="registry name "
                                         "(segcli weights list), a checkpoint file, or a model folder")]
    = "omg-seg-convl",
    host: Annotated[str, typer.Option(metavar="ADDR", help="address to listen on; anything but 127.0.0.1, "
                                      "localhost or ::1 makes the app (and the model) reachable from other "
                                      "machines")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="N", help="TCP port (0: any free port)")] = DEFAULT_PORT,
    vocab: Annotated[Optional[str], typer.Option(metavar="CLASSES", help='label objects with these classes, '
                                                 'comma separated, synonyms with | : "dog|puppy,car"')] = None,
    stuff: Annotated[Optional[str], typer.Option(metavar="CLASSES", help="background classes added after "
                                                 "--vocab")] = None,
    vocab_file: Annotated[Optional[Path], typer.Option(metavar="FILE", help="one class per line")] = None,
    dataset: Annotated[Optional[str], typer.Option(metavar="NAME", help="built-in vocabulary (segcli vocab "
                                                   "list)")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    precision: Annotated[Optional[str], typer.Option(metavar="P", help="fp32, bf16 or fp16 (default as in "
                                                     "segcli vis)")] = None,
    size: Annotated[Optional[str], typer.Option(metavar="WxH", help="resize limits or a preset (official, fast, "
                                                "small, tiny); default: the model's")] = None,
    cache_mb: Annotated[float, typer.Option("--cache-mb", metavar="MB", help="memory for cached per-frame "
                                            "features (LRU); a 1280x736 frame of the released model takes about "
                                            "38 MB in bf16, 76 MB in fp32")] = 1024.0,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", metavar="MB", help="largest file the page "
                                                 "may upload")] = 512.0,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open the page in a browser")] = True,
    threads: Annotated[Optional[int], typer.Option(metavar="N", help="torch CPU threads")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no notices on stderr")] = False,
) -> None:
    """Open a local page: scrub and play the video, click on an object (left click: a point, drag: a
    box) to see its mask at once, track it (vos), run vis/vps, browse tracks, export.

    Examples:

      segcli app clip.mp4

      segcli app clip.mp4 --vocab "dog|puppy,person" --port 8800

      segcli app photos/ --weights ../shared/golden/tiny_v1 --no-open
    """
    from .. import cli
    from ..errors import UsageError
    from ..pipeline.engine import is_model_folder

    console = cli.Console(quiet)
    cli.check_common(weights=weights, device=device, precision=precision, threads=threads)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: must be from 0 to 65535")
    if not cache_mb >= 0:
        raise UsageError(f"--cache-mb {cache_mb}: must be >= 0")
    if not max_upload_mb > 0:
        raise UsageError(f"--max-upload-mb {max_upload_mb}: must be > 0")
    scale = cli.parse_size(size)
    vocabulary, _ = cli.select_vocabulary(vocab, stuff, vocab_file, dataset)
    vocab_args: list[str] = []
    if vocab is not None:
        vocab_args = ["--vocab", vocab] + (["--stuff", stuff] if stuff else [])
    elif vocab_file is not None:
        vocab_args = ["--vocab-file", str(vocab_file)]
    elif dataset is not None:
        vocab_args = ["--dataset", dataset]

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"segcli app needs the web server packages ({exc.name} is missing): "
                         "pip install 'segcli[app]'") from None
    from ..webapp import bind
    from ..webapp.state import expand_input

    expand_input(input)  # a missing or empty input fails before the model loads
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (try --port 0)") from None
    if host not in LOOPBACK_HOSTS:
        console.notice(f"warning: listening on {host}: other machines can reach this app and run the model")
    from ..webapp import AppConfig, AppState, serve

    try:
        agnostic = vocabulary is None and not is_model_folder(weights)
        seg = cli.load_model(weights, device, precision, vocabulary, None, console, class_agnostic=agnostic,
                             threads=threads)
        config = AppConfig(weights=weights, input=input, scale=scale, size_arg=size, device=device,
                           precision=precision, cache_mb=cache_mb, max_upload_mb=max_upload_mb,
                           vocab_args=vocab_args, labelled=vocabulary is not None)
        state = AppState(seg, config)
    except BaseException:
        sock.close()
        raise
    console.notice(f"{len(state.sources)} source{'' if len(state.sources) == 1 else 's'}; feature cache "
                   f"{cache_mb:g} MB")
    # the address is printed even with -q: it is how the page is reached
    serve(state, sock, host=host, open_browser=open_browser,
          notice=lambda message: print(f"segcli: {message}", file=sys.stderr, flush=True))
