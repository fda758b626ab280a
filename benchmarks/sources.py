#!/usr/bin/env python
"""Frame sources: time to first frame and steady frames/s by kind of source, and PyAV vs decord.

    .venv/bin/python benchmarks/sources.py                 # samples/*.mp4 + a generated 1280x720 video
    .venv/bin/python benchmarks/sources.py --frames 300 --repeat 5

Everything goes through `segcli.pipeline.reader.open_source` and converts every frame to upright
RGB, as the pipeline gets it. Sources (all on loopback, nothing leaves the machine):

* file        the MP4 on disk
* http        the same MP4 from a loopback HTTP server (byte ranges, like a static file server)
* tcp         MPEG-TS of the same frames from a loopback TCP server, sent as fast as it is read
* tcp-live    the same, sent packet by packet in real time: time to first frame = the latency of
              a live stream (FFmpeg's probing reads up to ~20 frames / 5 s to learn the frame rate
              before the first one comes out); "analyzeduration 0.2 s" passes that demuxer option
              (`--source-option analyzeduration=200000`) to shorten it
* stdin-ts    MPEG-TS through a pipe (streamed frame by frame)
* stdin-mp4   the MP4 through a pipe: streamed when its moov comes first (samples/), spooled to
              a temp file first when it comes last (the generated video, PyAV's default)

Then the pyav and decord readers on each file and on generated 480x270 and 640x360 videos: time
to the first frame (open included) and steady decode + RGB frames/s; `reader="auto"` follows
this table. Each measurement is repeated --repeat times, interleaved, and the best run is kept (a
shared machine has noisy neighbours). "first frame" is milliseconds from the open_source call to
the first frame; "frames/s" counts the frames after it.
"""

from __future__ import annotations

import argparse
import http.server
import io
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segcli.pipeline.reader import _decord_installed, open_source  # noqa: E402


def synthetic_frames(width: int, height: int, n: int):
    """Moving gradients and a bouncing box: compressible like real footage, never static."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        r = (127 + 127 * np.sin((x + 4 * i) / 53.0)).astype(np.uint8)
        g = (127 + 127 * np.sin((y - 3 * i) / 37.0)).astype(np.uint8)
        b = ((x + y + 5 * i) % 256).astype(np.uint8)
        frame = np.stack([r, g, b], axis=-1)
        cx, cy = (37 * i) % (width - 80), (23 * i) % (height - 80)
        frame[cy:cy + 80, cx:cx + 80] = (240, 240, 30)
        yield frame


def encode(frames, width, height, fps, fmt=None, path=None) -> bytes:
    buf = io.BytesIO() if path is None else None
    with av.open(buf if path is None else str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue() if path is None else Path(path).read_bytes()


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# ---- loopback servers -------------------------------------------------------------------------


class _Range(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        first, last = 0, len(data) - 1
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            first, last = int(m.group(1)), int(m.group(2) or last)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        try:
            self.wfile.write(data[first:last + 1])
        except OSError:
            pass


def http_server(files: dict):
    handler = type("H", (_Range,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


class _SocketWriter:
    def __init__(self, sock):
        self.sock = sock

    def write(self, data) -> int:
        self.sock.sendall(data)
        return len(data)


def tcp_server(data: bytes, live: bool = False) -> str:
    """Serve MPEG-TS `data` to one client: as fast as it reads, or live: remuxed packet by packet,
    each sent at its timestamp (real time, a frame arrives whole as from a camera)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        try:
            if not live:
                conn.sendall(data)
                return
            with av.open(io.BytesIO(data)) as src, \
                    av.open(_SocketWriter(conn), "w", format="mpegts", options={"flush_packets": "1"}) as out:
                in_stream = src.streams.video[0]
                out_stream = out.add_stream_from_template(in_stream)
                t0, origin = time.perf_counter(), None
                for packet in src.demux(in_stream):
                    if packet.dts is None:
                        continue
                    t = float(packet.dts * in_stream.time_base)
                    origin = t if origin is None else origin
                    time.sleep(max(0.0, t - origin - (time.perf_counter() - t0)))
                    packet.stream = out_stream
                    out.mux(packet)
        except (OSError, av.FFmpegError):
            pass
        finally:
            conn.close()
            srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}"


def stdin_pipe(data: bytes):
    r, w = os.pipe()

    def run():
        with os.fdopen(w, "wb") as out:
            try:
                out.write(data)
            except OSError:
                pass

    threading.Thread(target=run, daemon=True).start()
    return os.fdopen(r, "rb")


# ---- measurement -------------------------------------------------------------------------------


def measure(make_source) -> tuple[float, float, int]:
    """(ms to first frame, frames/s after it, frames) for the source that make_source() opens."""
    t0 = time.perf_counter()
    src = make_source()
    n, t_first = 0, None
    try:
        for _ in src:
            n += 1
            if t_first is None:
                t_first = time.perf_counter()
    finally:
        src.close()
    t_end = time.perf_counter()
    fps = (n - 1) / (t_end - t_first) if n > 1 else float("nan")
    return (t_first - t0) * 1000, fps, n


def best(runs):
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="frames of the generated video")
    ap.add_argument("--size", default="1280x720", help="WxH of the generated video")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="segcli-sources-") as tmp:
        gen = Path(tmp) / f"synthetic{height}p.mp4"
        encode(synthetic_frames(width, height, args.frames), width, height, int(args.fps), path=gen)
        extra = []  # reader comparison only: where decord stops being faster
        for w, h in ((480, 270), (640, 360)):
            extra.append(Path(tmp) / f"synthetic{h}p.mp4")
            encode(synthetic_frames(w, h, args.frames), w, h, int(args.fps), path=extra[-1])
        videos = sorted((ROOT / "samples").glob("*.mp4")) + [gen]
        files, server = {}, None
        ts_data = {}
        for v in videos:
            files[v.name] = v.read_bytes()
            frames = decoded(v)
            with av.open(str(v)) as c:
                rate = c.streams.video[0].average_rate
            ts_data[v.name] = encode(frames, frames[0].shape[1], frames[0].shape[0], rate, fmt="mpegts")
        server = http_server(files)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        print(f"# {os.cpu_count()} CPUs, PyAV {av.__version__}, decord: "
              f"{'installed' if _decord_installed() else 'not installed'}; best of {args.repeat}\n")  # fmt: skip

        print("| video | source | first frame (ms) | frames/s | frames |")
        print("|---|---|---|---|---|")
        for v in videos:
            data = ts_data[v.name]
            kinds = {
                "file": lambda v=v: open_source(v),
                "http": lambda v=v: open_source(f"{base}/{v.name}"),
                "tcp": lambda d=data: open_source(tcp_server(d)),
                "tcp-live": lambda d=data: open_source(tcp_server(d, live=True)),
                "tcp-live, analyzeduration 0.2 s": lambda d=data: open_source(
                    tcp_server(d, live=True), source_options={"analyzeduration": "200000"}),
                "stdin-ts": lambda d=data: open_source("-", stdin=stdin_pipe(d)),
                "stdin-mp4": lambda v=v: open_source("-", stdin=stdin_pipe(files[v.name])),
            }
            runs = {k: [] for k in kinds}
            for _ in range(args.repeat):
                for k, make in kinds.items():
                    if k.startswith("tcp-live") and runs[k]:
                        continue  # real time: once is enough (and it takes the video's duration)
                    runs[k].append(measure(make))
            for k in kinds:
                first, fps, count = best(runs[k])
                print(f"| {v.name} | {k} | {first:.0f} | {fps:.0f} | {count} |")

        print("\n| video | reader | first frame (ms) | frames/s after it | vs pyav |")
        print("|---|---|---|---|---|")
        readers = ["pyav"] + (["decord"] if _decord_installed() else [])
        for v in videos + extra:
            runs = {r: [] for r in readers}
            for _ in range(args.repeat):
                for r in readers:
                    runs[r].append(measure(lambda r=r, v=v: open_source(v, reader=r)))
            ref = best(runs["pyav"])[1]
            for r in readers:
                first, fps, _ = best(runs[r])
                print(f"| {v.name} | {r} | {first:.0f} | {fps:.0f} | {fps / ref:.2f}x |")
        with open_source(videos[0], reader="auto") as src:
            print(f"\nreader='auto' picks {src.info.reader} for {videos[0].name}", end="")
        with open_source(gen, reader="auto") as src:
            print(f", {src.info.reader} for {gen.name}")
        server.shutdown()


if __name__ == "__main__":
    main()
