#!/usr/bin/env python
"""Latency to the first result and steady frames/s of `segcli vis` on a file, an HTTP URL, a live
TCP MPEG-TS stream (paced at its frame rate) and stdin, through the installed console script.

    .venv/bin/python benchmarks/live_latency.py                  # tiny model, 60 frames at 25 fps

Reported per source: the run's own numbers from the summary (`run.first_result_s`: first frame
pushed -> first result out; mean per-clip latency) and the wall time from starting the command to
its first JSON line on stdout (process start, model load and probing included).
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "golden" / "tiny_v1"
SEGCLI = shutil.which("segcli") or str(Path(sys.executable).parent / "segcli")


def mpegts(n: int, fps: int, w: int = 320, h: int = 192) -> bytes:
    from segcli.bench import synthetic_frames

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=fps, options={"tune": "zerolatency"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for rgb in synthetic_frames(n, w, h):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def serve_http(folder: Path) -> tuple[str, http.server.HTTPServer]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *a) -> None:
            pass

    handler = Quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def paced_tcp(data: bytes, seconds: float) -> str:
    """Serve `data` to one client over TCP, spread over `seconds` (a live stream)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        step = max(188, len(data) // 200 // 188 * 188)
        with conn:
            for i in range(0, len(data), step):
                try:
                    conn.sendall(data[i:i + step])
                except OSError:
                    return
                time.sleep(seconds * step / len(data))
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}"


def run(source: str, args, stdin_data: bytes | None = None, pace_s: float = 0.0) -> dict:
    out = Path(tempfile.mkdtemp(prefix="segcli-live-"))
    cmd = [SEGCLI, "vis", source, "--weights", args.weights, "--vocab", "ball,box", "--score-threshold", "0",
           "-q", "-f", "jsonl", "-f", "summary", "-o", f"{out}/", "--source-option", "analyzeduration=200000"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if stdin_data is not None:
        step = max(188, len(stdin_data) // 200 // 188 * 188)
        for i in range(0, len(stdin_data), step):
            proc.stdin.write(stdin_data[i:i + step])
            proc.stdin.flush()
            time.sleep(pace_s * step / len(stdin_data))
        proc.stdin.close()
    err = proc.stderr.read().decode()
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1:]}
    summary = json.loads(next(out.glob("*.summary.json")).read_text())
    shutil.rmtree(out, ignore_errors=True)
    r = summary["run"]
    return {"frames": summary["frames"], "first": r["first_result_s"], "clip": r["clip_latency_s"]["mean"],
            "wall": wall, "live": r["live"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--fps", type=int, default=25)
    args = p.parse_args(argv)
    data = mpegts(args.frames, args.fps)
    real_time = args.frames / args.fps
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "v.ts").write_bytes(data)
        base, server = serve_http(Path(tmp))
        rows = {
            "file": run(str(Path(tmp) / "v.ts"), args),
            "http": run(f"{base}/v.ts", args),
            "tcp (live, real time)": run(paced_tcp(data, real_time), args),
            "stdin (real time)": run("-", args, stdin_data=data, pace_s=real_time),
        }
        server.shutdown()
    print(f"segcli vis, {Path(args.weights).name}, {args.frames} frames 320x192 at {args.fps} fps "
          f"(real time {real_time:.1f} s)")
    print(f"{'source':<24} {'mode':<7} {'first result':>13} {'clip latency':>13} {'frames/s':>9} {'wall':>7}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<24} FAILED {r['error']}")
            continue
        mode = "online" if r["live"] else "exact"
        print(f"{name:<24} {mode:<7} {r['first']:12.2f}s {r['clip']:12.2f}s {r['frames'] / r['wall']:9.1f} "
              f"{r['wall']:6.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
