"""The HTTP side of `segcli app`: a FastAPI app over `AppState`, plus the static page.

Safety: the server binds 127.0.0.1 unless told otherwise; requests whose Host header is not one of
the addresses it serves are refused (DNS rebinding), and so are state-changing requests from
another origin (a web page cannot drive the local model). Clients name sources, frames, runs and
exports by id; the only files served are the page's own (a fixed list), frames of the sources the
app was started with or was sent (size-limited uploads) and the exports it wrote. Every error is
one JSON object {"error": "..."} with a 4xx/5xx status, so the page always has a message to show.

Endpoints (sid: source id, k: frame index):

    GET  /                                     the page (index.html, app.js, app.css under /static/)
    GET  /api/info                             sources, vocabulary, formats, cache, current run
    POST /api/upload?filename=NAME             raw body: an image or a video -> a new source
    GET  /api/sources/{sid}/frames/{k}         JPEG of frame k
    GET  /api/sources/{sid}/state              objects, their prompts, the latest run
    POST /api/sources/{sid}/prompts            {"frame", "object", "point": [x, y] | "box": [x1, y1, x2, y2]}
    GET  /api/sources/{sid}/prompts/{k}        the prompted objects' masks on frame k (JSON)
    GET  /api/sources/{sid}/prompts/{k}/mask.png   8-bit index PNG (value = object id)
    POST /api/sources/{sid}/undo               remove the last prompt
    POST /api/sources/{sid}/clear              {"object": id?}: remove one object's prompts, or all
    POST /api/vocab                            {"vocab": "a,b|c", "stuff": ""}: labels on ("" = off)
    POST /api/sources/{sid}/runs               {"task": vos|vis|vps|vss, "start", "end", "mode", "retrack_from"}
    GET  /api/runs/{rid}                       run summary
    GET  /api/runs/{rid}/events                server-sent events: start, progress, frame, done|error|cancelled
    POST /api/runs/{rid}/cancel
    GET  /api/sources/{sid}/results/{k}        the latest run's segments on frame k (JSON)
    GET  /api/sources/{sid}/results/{k}/mask.png   index PNG (value = segment index in the JSON)
    GET  /api/sources/{sid}/tracks             per-track timeline: id, label, score, spans
    POST /api/sources/{sid}/export             {"formats": [...]} -> {"url", "files", "command"}
    GET  /api/exports/{eid}                    the zip
"""

from __future__ import annotations

import json
import threading
import time
from importlib import resources
from typing import Optional
from urllib.parse import urlsplit

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import InputNotFoundError, PromptError, SegcliError, UnreadableInputError, UsageError
from .state import AppState, ConflictError, NotFound

STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
SSE_HEARTBEAT_S = 10.0


def _status(exc: SegcliError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, (InputNotFoundError, UnreadableInputError, UsageError, PromptError)):
        return 400 if not isinstance(exc, UnreadableInputError) else 415
    return 400


def static_text(name: str) -> bytes:
    return resources.files("segcli.webapp").joinpath("static", name).read_bytes()


def create_app(state: AppState, allowed_hosts: tuple[str, ...] | None = None) -> FastAPI:
    """The ASGI app. allowed_hosts: Host header names accepted besides the loopback names (the
    command adds the --host it binds; "*" accepts any, for a server bound to every interface)."""
    app = FastAPI(title="segcli app", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = set(allowed_hosts or ()) | set(LOOPBACK)
    app.state.segcli = state

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        name = urlsplit(f"//{host}").hostname or ""
        if "*" not in hosts and name not in hosts and f"[{name}]" not in hosts:
            return JSONResponse({"error": f"host {host!r} is not served here"}, status_code=403)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin not in (None, "null"):
            oname = urlsplit(origin).hostname or ""
            if ("*" not in hosts and oname not in hosts) or urlsplit(origin).netloc != host:
                return JSONResponse({"error": "cross-origin requests are refused"}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(SegcliError)
    async def segcli_error(request: Request, exc: SegcliError):
        return JSONResponse({"error": str(exc)}, status_code=_status(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(v) for v in e.get("loc", ()) if v not in ("body", "path", "query"))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"error": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    # ---- the page ---------------------------------------------------------------------------
    @app.get("/")
    def index():
        return Response(static_text("index.html"), media_type=STATIC_FILES["index.html"],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise NotFound(f"no file {name!r}")
        return Response(static_text(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    # ---- info and sources ---------------------------------------------------------------------
    @app.get("/api/info")
    def info():
        return state.info()

    @app.post("/api/upload")
    async def upload(request: Request, filename: str):
        from starlette.concurrency import run_in_threadpool

        from .state import upload_too_large

        limit = int(state.config.max_upload_mb * 2**20)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise upload_too_large(filename, limit)
        target = state.begin_upload(filename)
        size = 0
        try:
            with open(target, "wb") as f:  # streamed to disk: never more than one chunk in memory
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise upload_too_large(target.name, limit)
                    f.write(chunk)
        except BaseException:
            state.discard_upload(target)
            raise
        source = await run_in_threadpool(state.finish_upload, target, size)
        return source.describe()

    @app.get("/api/sources/{sid}/frames/{k}")
    def frame(sid: int, k: int):
        data = state.source(sid).frames.jpeg(k)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/sources/{sid}/state")
    def source_state(sid: int):
        return state.state(sid)

    # ---- prompts ------------------------------------------------------------------------------
    @app.post("/api/sources/{sid}/prompts")
    def add_prompt(sid: int, body: dict = Body(...)):
        frame_index = _int(body.get("frame"), "frame")
        obj = _int(body.get("object", 1), "object")
        t0 = time.perf_counter()
        view = state.add_prompt(sid, frame_index, obj, point=body.get("point"), box=body.get("box"))
        view["timing"]["total_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return view

    @app.get("/api/sources/{sid}/prompts/{k}")
    def prompt_view(sid: int, k: int):
        state.source(sid).frames._check(k)
        return state.prompt_view(sid, k)

    @app.get("/api/sources/{sid}/prompts/{k}/mask.png")
    def prompt_mask(sid: int, k: int):
        return Response(state.prompt_png(sid, k), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/sources/{sid}/undo")
    def undo(sid: int):
        return state.undo(sid)

    @app.post("/api/sources/{sid}/clear")
    def clear(sid: int, body: Optional[dict] = Body(None)):
        obj = (body or {}).get("object")
        return state.clear(sid, None if obj is None else _int(obj, "object"))

    @app.post("/api/vocab")
    def vocab(body: dict = Body(...)):
        text = body.get("vocab") or ""
        stuff = body.get("stuff") or None
        if not isinstance(text, str) or (stuff is not None and not isinstance(stuff, str)):
            raise UsageError("vocab and stuff are text: classes separated by commas, synonyms by |")
        return state.set_vocabulary(text, stuff)

    # ---- runs ---------------------------------------------------------------------------------
    @app.post("/api/sources/{sid}/runs")
    def start_run(sid: int, body: dict = Body(...)):
        task = body.get("task", "vos")
        start = _int(body.get("start", 0) or 0, "start")
        end = body.get("end")
        end = None if end in (None, "") else _int(end, "end")
        retrack = body.get("retrack_from")
        retrack = None if retrack in (None, "") else _int(retrack, "retrack_from")
        run = state.start_run(sid, str(task), start, end, str(body.get("mode", "online")), retrack)
        return run.summary()

    @app.get("/api/runs/{rid}")
    def run_summary(rid: str):
        return state.run(rid).summary()

    @app.post("/api/runs/{rid}/cancel")
    def cancel(rid: str):
        return state.cancel(rid)

    @app.get("/api/runs/{rid}/events")
    async def events(rid: str, request: Request, after: int = 0):
        run = state.run(rid)
        last = request.headers.get("last-event-id")
        if last is not None and last.isdigit():
            after = int(last)
        stop = threading.Event()

        def stream():
            cursor = after
            quiet = 0.0
            while not stop.is_set():
                batch = run.wait_events(cursor, 1.0)
                for event in batch:
                    cursor += 1
                    yield f"id: {cursor}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    if event["type"] in ("done", "error", "cancelled"):
                        return
                if batch:
                    quiet = 0.0
                    continue
                if run.status != "running" and cursor >= len(run.events):
                    return
                quiet += 1.0
                if quiet >= SSE_HEARTBEAT_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        async def body():
            try:
                async for chunk in iterate_in_threadpool(stream()):
                    if await request.is_disconnected():
                        break
                    yield chunk
            finally:
                stop.set()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/sources/{sid}/results/{k}")
    def result_view(sid: int, k: int):
        state.source(sid).frames._check(k)
        return state.result_view(sid, k)

    @app.get("/api/sources/{sid}/results/{k}/mask.png")
    def result_mask(sid: int, k: int):
        return Response(state.result_png(sid, k), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/sources/{sid}/tracks")
    def tracks(sid: int):
        run = state.source(sid).run
        if run is None:
            return {"run": None, "tracks": []}
        return {"run": run.summary(), "tracks": run.tracks()}

    # ---- export -------------------------------------------------------------------------------
    @app.post("/api/sources/{sid}/export")
    def export(sid: int, body: dict = Body(...)):
        formats = body.get("formats") or []
        if isinstance(formats, str):
            formats = [formats]
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise UsageError("formats is a list of format names")
        return state.export(sid, formats)

    @app.get("/api/exports/{eid}")
    def download(eid: str):
        path = state.export_path(eid)
        return FileResponse(path, media_type="application/zip", filename=path.name)

    return app


def _int(value, name: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{name} {value!r}: expected an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"{name} {value!r}: expected an integer")
    return value
