"""segcli.pipeline.reader on live and remote sources: HTTP, TCP and UDP MPEG-TS, stdin that streams,
FFmpeg devices (lavfi); errors for unreachable, stalled and dropped streams. Loopback only."""

from __future__ import annotations

import http.server
import io
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from segcli.errors import InputNotFoundError, StreamError, UnreadableInputError, UsageError
from segcli.pipeline.reader import open_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "shapes.mp4"
W, H = 64, 48


def level_frame(i: int) -> np.ndarray:
    """A flat frame whose grey level encodes its number (5 levels apart: survives H.264)."""
    return np.full((H, W, 3), (i * 5) % 250, np.uint8)


def level_of(rgb: np.ndarray) -> int:
    return round(float(rgb.mean()) / 5)


def add_h264(container, rate: int, keyint: int | None = None):
    options = {"tune": "zerolatency"}  # no B-frames, no lookahead: a frame out per frame in
    if keyint:
        options["x264-params"] = f"keyint={keyint}"
    stream = container.add_stream("libx264", rate=rate, options=options)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    return stream


def mpegts_bytes(n: int, rate: int = 20) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as container:
        stream = add_h264(container, rate)
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(level_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


class SocketWriter:
    """File object for PyAV output into a connected TCP socket."""

    def __init__(self, sock):
        self.sock = sock

    def write(self, data) -> int:
        self.sock.sendall(data)
        return len(data)


class DatagramWriter:
    """File object for PyAV output as UDP datagrams of 7 TS packets (1316 bytes)."""

    def __init__(self, sock, addr):
        self.sock, self.addr, self.buf = sock, addr, b""

    def write(self, data) -> int:
        self.buf += bytes(data)
        while len(self.buf) >= 1316:
            self.sock.sendto(self.buf[:1316], self.addr)
            self.buf = self.buf[1316:]
        return len(data)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProducer:
    """A loopback TCP server that streams live MPEG-TS (H.264, 20 fps, paced) to its first client.

    reset_after=N: after N frames, reset the connection (RST); stall_after=N: after N frames, keep
    the connection open and send nothing more."""

    def __init__(self, frames: int, pace: float = 0.01, reset_after: int | None = None,
                 stall_after: int | None = None):  # fmt: skip
        self.frames, self.pace = frames, pace
        self.reset_after, self.stall_after = reset_after, stall_after
        self.sent = 0
        self.finished = threading.Event()
        self.release = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        try:
            with av.open(SocketWriter(conn), "w", format="mpegts", options={"flush_packets": "1"}) as container:
                stream = add_h264(container, 20)
                for i in range(self.frames):
                    for packet in stream.encode(av.VideoFrame.from_ndarray(level_frame(i), format="rgb24")):
                        container.mux(packet)
                    self.sent = i + 1
                    time.sleep(self.pace)
                    if self.sent == self.reset_after:
                        time.sleep(0.2)  # let the reader take in what was sent
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        conn.close()
                        return
                    if self.sent == self.stall_after:
                        self.release.wait(10)
                        return
                for packet in stream.encode():
                    container.mux(packet)
        except (OSError, av.FFmpegError):
            pass  # the reader went away
        finally:
            self.finished.set()
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.release.set()
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def tcp_producer():
    producers = []

    def make(*args, **kwargs):
        producers.append(TcpProducer(*args, **kwargs))
        return producers[-1]

    yield make
    for p in producers:
        p.close()


# ---- HTTP -----------------------------------------------------------------------------------


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `files` (name -> (bytes, cut)); honours byte ranges like a real file server; a `cut`
    announces the full length but sends only that many bytes and closes (a dropped download)."""

    files: dict = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if name not in self.files:
            self.send_error(404)
            return
        data, cut = self.files[name]
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
        body = data[first:last + 1]
        if cut is not None:
            body = body[:cut]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def http_server():
    handler = type("Handler", (RangeHandler,), {"files": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.files
    server.shutdown()
    server.server_close()


def test_http_file_same_frames_as_local(http_server):
    base, files = http_server
    files["shapes.mp4"] = (SAMPLE.read_bytes(), None)
    with open_source(SAMPLE) as src:
        local = list(src)
    with open_source(f"{base}/shapes.mp4") as src:
        assert src.info.live and src.info.num_frames is None
        assert (src.info.name, src.info.width, src.info.height, src.info.fps) == ("shapes", 320, 192, 24.0)
        remote = list(src)
        with pytest.raises(UsageError, match="read only once"):
            list(src)
    assert len(remote) == len(local) == 60
    assert [f.index for f in remote] == [f.index for f in local]
    assert [f.pts for f in remote] == [f.pts for f in local]
    assert all((a.rgb == b.rgb).all() for a, b in zip(remote, local))


def test_http_download_dropped_midway_raises_after_the_frames(http_server):
    base, files = http_server
    data = mpegts_bytes(60)
    files["cut.ts"] = (data, len(data) // 2)
    got = []
    with pytest.raises(StreamError, match=r"stream http://127\.0\.0\.1:\d+/cut\.ts dropped after frame \d+") as err:
        with open_source(f"{base}/cut.ts") as src:
            for f in src:
                got.append(f.index)
    assert len(got) >= 10 and got == list(range(len(got)))
    assert f"after frame {got[-1]}:" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 10


def test_http_not_found_and_password_masked(http_server):
    base, _ = http_server
    with pytest.raises(StreamError, match="cannot open stream .*missing.mp4: .*404"):
        open_source(f"{base}/missing.mp4")
    url = base.replace("http://", "http://user:secret@") + "/missing.mp4"
    with pytest.raises(StreamError) as err:
        open_source(url)
    assert "secret" not in str(err.value) and "user:***@" in str(err.value)


def test_hls_playlist_over_http(http_server, tmp_path):
    base, files = http_server
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(tmp_path / "index.m3u8"), "w", format="hls", options=options) as container:
        stream = add_h264(container, 10, keyint=10)
        for i in range(25):
            for packet in stream.encode(av.VideoFrame.from_ndarray(level_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    segments = sorted(p.name for p in tmp_path.iterdir())
    assert len(segments) >= 3  # a playlist and two or more MPEG-TS segments
    for name in segments:
        files[name] = ((tmp_path / name).read_bytes(), None)
    with open_source(f"{base}/index.m3u8", every=4) as src:
        assert src.info.live and src.info.name == "index" and src.info.fps == 10.0
        frames = list(src)
    assert [f.index for f in frames] == [0, 4, 8, 12, 16, 20, 24]
    assert [level_of(f.rgb) for f in frames] == [f.index for f in frames]
    assert [f.pts for f in frames] == pytest.approx([f.index / 10 for f in frames])


# ---- TCP / UDP ------------------------------------------------------------------------------


def test_tcp_live_mpegts_frames_as_they_come(tcp_producer):
    producer = tcp_producer(60, pace=0.03)
    t0 = time.monotonic()
    with open_source(producer.url) as src:
        assert src.info.live and src.info.num_frames is None and src.info.fps == 20.0
        assert (src.info.width, src.info.height) == (W, H)
        frames = []
        for f in src:
            if not frames:
                first_at, sent_then = time.monotonic() - t0, producer.sent
            frames.append(f)
    # online: the first frame came out while the producer was still sending (FFmpeg probes ~20 frames)
    assert sent_then < 60 and first_at < 3
    assert [f.index for f in frames] == list(range(60))
    assert [f.pts for f in frames] == pytest.approx([i / 20 for i in range(60)])
    assert [level_of(f.rgb) for f in frames] == [i % 50 for i in range(60)]
    assert src.missing == 0


def test_tcp_stream_reset_midway(tcp_producer):
    producer = tcp_producer(40, reset_after=12)
    got = []
    with pytest.raises(StreamError, match=r"dropped after frame 11: .*reset"):
        with open_source(producer.url) as src:
            for f in src:
                got.append(f.index)
    assert got == list(range(12))  # everything sent before the reset was delivered


def test_tcp_stream_stall_times_out(tcp_producer):
    producer = tcp_producer(40, stall_after=25)
    got = []
    t0 = time.monotonic()
    with pytest.raises(StreamError, match=r"dropped after frame \d+: no data for 1 s \(timed out\)"):
        with open_source(producer.url, timeout=(5, 1)) as src:  # (open, read): 1 s of silence is a drop
            for f in src:
                got.append(f.index)
    assert time.monotonic() - t0 < 5
    assert got == list(range(len(got))) and len(got) >= 20


def test_stop_early_and_close_a_live_stream(tcp_producer):
    producer = tcp_producer(200, pace=0.01)
    src = open_source(producer.url)
    it = iter(src)
    assert [next(it).index for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    src.close()
    with open_source(tcp_producer(200, pace=0.01).url, max_frames=7) as src:
        assert [f.index for f in src] == list(range(7))  # max_frames stops without waiting for more


def test_unreachable_and_silent_sources_fail_fast():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(StreamError, match=rf"cannot open stream tcp://127\.0\.0\.1:{port}: .*refused"):
        open_source(f"tcp://127.0.0.1:{port}")
    with pytest.raises(StreamError, match="cannot open stream"):
        open_source(f"rtsp://127.0.0.1:{port}/cam")
    assert time.monotonic() - t0 < 3
    with socket.socket() as silent:  # accepts (backlog) but never sends a byte
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        t0 = time.monotonic()
        with pytest.raises(StreamError, match=r"no data for 1 s \(timed out\)"):
            open_source(f"tcp://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        assert time.monotonic() - t0 < 3


def test_udp_live_mpegts():
    port = free_port(socket.SOCK_DGRAM)
    stop = threading.Event()

    def produce():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            writer = DatagramWriter(out, ("127.0.0.1", port))
            with av.open(writer, "w", format="mpegts", options={"flush_packets": "1"}) as container:
                stream = add_h264(container, 25, keyint=5)  # the reader may join mid-stream
                for i in range(1000):
                    if stop.is_set():
                        break
                    for packet in stream.encode(av.VideoFrame.from_ndarray(level_frame(i), format="rgb24")):
                        container.mux(packet)
                    time.sleep(0.01)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        with open_source(f"udp://127.0.0.1:{port}", max_frames=15) as src:
            assert src.info.live and src.info.fps == 25.0
            frames = list(src)
    finally:
        stop.set()
        thread.join(5)
    assert len(frames) == 15
    indices = [f.index for f in frames]
    assert indices[0] == 0 and indices == sorted(set(indices))
    assert src.missing == indices[-1] - 14  # a datagram lost on loopback would show as a counted gap


# ---- stdin ----------------------------------------------------------------------------------

CHILD = (
    "import sys\n"
    "from segcli.pipeline.reader import open_source\n"
    "src = open_source('-')\n"
    "print('open', src.info.live, src.info.width, src.info.height, src.info.fps, flush=True)\n"
    "for f in src:\n"
    "    print('frame', f.index, round(float(f.rgb.mean())), flush=True)\n"
    "print('end', flush=True)\n"
)


def start_child():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.decode().strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def y4m_frame(level: int) -> bytes:
    return b"FRAME\n" + bytes([level]) * (W * H) + bytes([128]) * (W * H // 2)


def rgb_level(luma: int) -> float:
    """The grey level of a limited-range luma value."""
    return (luma - 16) * 255 / 219


def check_frame_line(line: str, index: int, luma: int) -> None:
    kind, i, mean = line.split()
    assert (kind, int(i)) == ("frame", index)
    assert abs(int(mean) - rgb_level(luma)) <= 1.5


def test_stdin_y4m_first_frame_before_the_producer_goes_on():
    proc, lines = start_child()
    try:
        proc.stdin.write(b"YUV4MPEG2 W64 H48 F10:1 Ip A1:1 C420jpeg\n" + y4m_frame(40))
        proc.stdin.flush()
        # the producer waits: a reader that spools stdin would never print these
        assert lines.get(timeout=20) == "open True 64 48 10.0"
        check_frame_line(lines.get(timeout=10), 0, 40)
        for i in range(1, 6):
            proc.stdin.write(y4m_frame(40 + 10 * i))
            proc.stdin.flush()
            check_frame_line(lines.get(timeout=10), i, 40 + 10 * i)
        proc.stdin.close()
        assert lines.get(timeout=10) == "end"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_stdin_mpegts_from_a_slow_producer():
    data = mpegts_bytes(40)
    held_back = len(data) * 3 // 10  # the last 12 or so frames
    proc, lines = start_child()
    try:
        for pos in range(0, len(data) - held_back, 188 * 4):  # a slow producer: 4 TS packets at a time
            proc.stdin.write(data[pos:min(pos + 188 * 4, len(data) - held_back)])
            proc.stdin.flush()
            time.sleep(0.005)
        # the producer waits: the first frames must come out while it has not finished
        assert lines.get(timeout=20) == "open True 64 48 20.0"
        check_frame_line(lines.get(timeout=10), 0, 16)
        proc.stdin.write(data[len(data) - held_back:])
        proc.stdin.close()
        out = []
        while out[-1:] != ["end"]:
            out.append(lines.get(timeout=10))
        assert proc.wait(10) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    frames = [line.split() for line in out if line.startswith("frame")]
    assert [int(f[1]) for f in frames] == list(range(1, 40))
    assert [round(int(f[2]) / 5) for f in frames] == list(range(1, 40))


def write_h264(path, n=6, movflags=None):
    with av.open(str(path), "w", options={"movflags": movflags} if movflags else {}) as container:
        stream = add_h264(container, 10)
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(level_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class Unseekable(io.RawIOBase):
    """A pipe-like stdin: no seek, short reads."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        chunk = self._b.read(min(len(buf), 4096))
        buf[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize(
    "make,live",
    [
        (lambda p: write_h264(p / "a.mp4"), False),  # moov after mdat: spooled to a temp file
        (lambda p: write_h264(p / "b.mp4", movflags="faststart"), True),
        (lambda p: write_h264(p / "c.mp4", movflags="frag_keyframe+empty_moov"), True),
        (lambda p: write_h264(p / "d.mkv"), True),
    ],
)
def test_stdin_streams_or_spools_by_container(tmp_path, make, live):
    data = make(tmp_path).read_bytes()
    src = open_source("-", stdin=io.BufferedReader(Unseekable(data)))
    try:
        assert src.info.live is live
        assert src.info.num_frames == (None if live else 6)
        frames = list(src)
    finally:
        src.close()
    assert [f.index for f in frames] == list(range(6))
    assert [level_of(f.rgb) for f in frames] == list(range(6))
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(6)])


def test_stdin_image_streams_and_single_images():
    from PIL import Image

    def jpeg(level, **kwargs):
        buf = io.BytesIO()
        Image.fromarray(np.full((H, W, 3), level, np.uint8)).save(buf, "JPEG", quality=95, **kwargs)
        return buf.getvalue()

    def png(level):
        buf = io.BytesIO()
        Image.fromarray(np.full((H, W, 3), level, np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 1
    mjpeg = b"".join(jpeg(30 * i, progressive=i % 2 == 1) for i in range(5))
    for data in (mjpeg, b"".join(png(30 * i) for i in range(5))):
        src = open_source("-", stdin=io.BufferedReader(Unseekable(data)))  # MJPEG / image2pipe: frame by frame
        assert src.info.kind == "video" and src.info.live and src.info.fps == 25.0
        frames = list(src)
        assert [f.index for f in frames] == list(range(5))
        assert [round(float(f.rgb.mean()) / 30) for f in frames] == list(range(5))
    for data in (jpeg(90, progressive=True, exif=exif), png(90)):  # one image (with an EXIF block): an image
        with open_source("-", stdin=io.BufferedReader(Unseekable(data))) as src:
            assert src.info.kind == "image" and not src.info.live
            assert abs(float(next(iter(src)).rgb.mean()) - 90) < 2


def test_stdin_unreadable_and_start_past_the_end():
    with pytest.raises(UnreadableInputError, match="stdin"):
        open_source("-", stdin=io.BytesIO(b"\x00\x01garbage that is no video" * 200))
    src = open_source("-", stdin=io.BytesIO(mpegts_bytes(10)), start=50)
    with pytest.raises(UsageError, match=r"--start 50 is past the end of the video \(10 frames\)"):
        list(src)


# ---- devices (lavfi), format and options passthrough ----------------------------------------


def test_lavfi_device_limits_and_one_pass():
    spec = "testsrc2=size=64x48:rate=10"
    with open_source(spec, source_format="lavfi", max_frames=5, every=3) as src:
        assert src.info.live and src.info.name == "lavfi" and src.info.output_fps == pytest.approx(10 / 3)
        assert [(f.index, round(f.pts, 3)) for f in src] == [(0, 0.0), (3, 0.3), (6, 0.6), (9, 0.9), (12, 1.2)]
    with open_source(spec, source_format="lavfi", duration=1.0, start=5) as src:
        assert [f.index for f in src] == list(range(5, 15))
    with open_source(spec, source_format="lavfi", fps=4, max_frames=4) as src:
        assert [f.index for f in src] == [0, 3, 5, 8]  # slots of 0.25 s: first frame of each


def test_source_format_and_options_passthrough(tmp_path):
    raw = tmp_path / "frames.yuv"
    raw.write_bytes(b"".join(y4m_frame(40 + 20 * i)[6:] for i in range(4)))  # raw yuv420p, no header
    opts = {"video_size": "64x48", "pixel_format": "yuv420p", "framerate": "5"}
    with open_source(raw, source_format="rawvideo", source_options=opts) as src:
        assert (src.info.width, src.info.height, src.info.fps, src.info.live) == (W, H, 5.0, False)
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.pts for f in frames] == pytest.approx([0, 0.2, 0.4, 0.6])
    assert [float(f.rgb.mean()) for f in frames] == pytest.approx([rgb_level(40 + 20 * i) for i in range(4)], abs=1.5)
    with pytest.raises(UsageError, match="unknown source format 'nope'"):
        open_source(raw, source_format="nope")
    with pytest.raises(UsageError, match="local files only"):
        open_source("http://127.0.0.1:1/x.mp4", reader="decord")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2 is Linux only")
def test_devices_open_through_v4l2():
    # no camera here: a character device that is not one fails as a stream; a missing one is named
    with pytest.raises(StreamError, match="cannot open stream /dev/null: "):
        open_source("/dev/null")
    with pytest.raises(InputNotFoundError, match="no such device: /dev/video97"):
        open_source("/dev/video97")


def test_stdin_interrupt_ends_a_silent_producers_stream():
    """A run that stops while the producer is silent: `interrupt()` (what a stopped session calls
    through prefetch's on_stop) makes the blocked read return end of stream, so the decoding
    thread ends instead of waiting for bytes that may never come. The iteration below can end in
    no other way: the pipe stays open and nothing more is written."""
    import os

    data = mpegts_bytes(40)
    r, w = os.pipe()
    os.write(w, data[:len(data) // 2])
    with open(r, "rb", buffering=0) as pipe:
        src = open_source("-", stdin=pipe, source_options={"analyzeduration": "200000"})
        first = threading.Event()
        got = []

        def consume():
            for f in src:
                got.append(f.index)
                first.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        try:
            assert first.wait(20), "no frame from the first half"
            src.interrupt()
            consumer.join(10)
            assert not consumer.is_alive(), "the read did not end"
            assert got == list(range(len(got))) and 0 < len(got) < 40
        finally:
            os.close(w)
            src.close()
