"""`segcli app`: a local web page to click on objects, see their masks at once, track them through
the video, run vis/vps, browse the tracks and export with segcli's writers.

    segcli/webapp/interactive.py   per-frame feature cache + prompt decoding (no HTTP)
    segcli/webapp/state.py         sources, frames, prompts, background runs, exports (no HTTP)
    segcli/webapp/server.py        the FastAPI app (JSON API, server-sent events, the static page)
    segcli/webapp/static/          index.html, app.js, app.css (plain files, no build step)

fastapi and uvicorn are imported only here, so the rest of segcli works without them.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

from .interactive import DEFAULT_CACHE_MB, FeatureCache, PromptSegmenter, decode_objects, frame_features
from .state import AppConfig, AppState

__all__ = ["AppConfig", "AppState", "DEFAULT_CACHE_MB", "FeatureCache", "PromptSegmenter", "decode_objects",
           "frame_features", "serve", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); OSError when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def _has_display() -> bool:
    """Linux without X11/Wayland: webbrowser would start a text browser in this terminal."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve(state: AppState, sock: socket.socket, *, host: str, open_browser: bool = False,
          notice: Callable[[str], None] | None = None) -> None:
    """Serve the app on the bound socket until Ctrl-C / SIGTERM."""
    import uvicorn

    from .server import create_app

    port = sock.getsockname()[1]
    allowed = ("*",) if host in ("0.0.0.0", "::", "") else (host,)
    app = create_app(state, allowed)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    url = url_of(host, port)
    say = notice or (lambda message: None)
    say(f"serving {url} (Ctrl-C stops)")
    if open_browser and not _has_display():
        say("no display here: open the address in a browser (--no-open hides this)")
        open_browser = False
    if open_browser:
        def _open():
            import webbrowser

            try:
                webbrowser.open(url)
            except Exception:  # noqa: BLE001 - no browser here: the URL is printed
                pass

        threading.Timer(0.5, _open).start()
    try:
        server.run(sockets=[sock])
    finally:
        state.close()
        sock.close()
