"""Generate segcli's sample inputs procedurally (no downloads), deterministically.

    python samples/make_samples.py [--out samples]

Writes, at 320x192, 24 fps, H.264 yuv420p in MP4 (through PyAV):

- shapes.mp4 (2.5 s): coloured shapes moving over a textured background; a disc and a
  square cross each other, a triangle moves diagonally, an ellipse turns in place.
- street.mp4 (3 s): a drawn street: sky, sun, buildings, trees, a road with lane marks,
  two car-like boxes driving in opposite lanes (they pass each other) and a walking figure.
- photo.png: one still of the street scene (frame 36), for ``segcli image``.

Everything comes from numpy/OpenCV drawing with a fixed seed, and the encoder runs bit-exact,
so the same PyAV/FFmpeg build reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segcli.io.video import VideoEncoder  # noqa: E402

W, H, FPS = 320, 192, 24
SEED = 20240611
X264 = {"crf": "23", "preset": "slow"}


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


# -- shapes -----------------------------------------------------------------------------------


def shapes_background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    base = 150 + 30 * np.sin(xx / 23.0) * np.cos(yy / 17.0) + 20 * np.sin((xx + yy) / 41.0)
    tiles = ((xx // 32 + yy // 32) % 2) * 18.0
    grain = cv2.GaussianBlur(rng.normal(0, 12, (H, W)).astype(np.float32), (0, 0), 1.2)
    gray = base + tiles + grain
    bg = np.stack([gray * 0.95, gray * 0.9, gray * 0.8], axis=-1)
    return np.clip(bg, 0, 255).astype(np.uint8)


def shapes_frame(bg: np.ndarray, i: int, n: int) -> np.ndarray:
    t = i / (n - 1)
    img = bg.copy()
    # a disc (left -> right) and a square (right -> left) cross in the middle
    cx, cy = int(_lerp(30, 290, t)), int(96 + 25 * np.sin(t * 2 * np.pi))
    cv2.circle(img, (cx, cy), 26, (220, 40, 40), cv2.FILLED, cv2.LINE_AA)
    sx, sy = int(_lerp(270, 20, t)), 80
    cv2.rectangle(img, (sx, sy), (sx + 44, sy + 44), (40, 80, 220), cv2.FILLED, cv2.LINE_AA)
    # a triangle moving diagonally
    tx, ty = int(_lerp(40, 250, t)), int(_lerp(170, 40, t))
    tri = np.array([[tx, ty - 22], [tx - 22, ty + 16], [tx + 22, ty + 16]], np.int32)
    cv2.fillPoly(img, [tri], (40, 190, 70), cv2.LINE_AA)
    # an ellipse turning in place
    cv2.ellipse(img, (250, 150), (30, 14), 360 * t, 0, 360, (235, 200, 40), cv2.FILLED, cv2.LINE_AA)
    return img


# -- street -----------------------------------------------------------------------------------


def street_background(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    horizon = 100
    for y in range(horizon):  # sky gradient
        s = y / horizon
        img[y] = (int(_lerp(90, 180, s)), int(_lerp(150, 210, s)), int(_lerp(230, 245, s)))
    cv2.circle(img, (272, 28), 14, (255, 230, 120), cv2.FILLED, cv2.LINE_AA)
    x = 0
    while x < W:  # buildings with windows
        bw, bh = int(rng.integers(28, 56)), int(rng.integers(30, 80))
        shade = int(rng.integers(90, 150))
        colour = (shade, shade - 10, shade - 20)
        cv2.rectangle(img, (x, horizon - bh), (x + bw - 3, horizon), colour, cv2.FILLED)
        for wy in range(horizon - bh + 6, horizon - 8, 12):
            for wx in range(x + 5, x + bw - 10, 10):
                lit = (230, 220, 150) if rng.random() < 0.4 else (60, 70, 90)
                cv2.rectangle(img, (wx, wy), (wx + 4, wy + 6), lit, cv2.FILLED)
        x += bw
    img[horizon:118] = (150, 150, 145)  # sidewalk
    img[118:H] = (70, 70, 75)  # road
    for lx in range(0, W, 40):  # lane marks
        cv2.rectangle(img, (lx + 6, 153), (lx + 26, 156), (235, 235, 235), cv2.FILLED)
    for tx in (40, 150, 230):  # trees on the sidewalk
        cv2.rectangle(img, (tx - 2, 92), (tx + 2, 112), (70, 50, 30), cv2.FILLED)
        cv2.circle(img, (tx, 84), 13, (50, 130, 50), cv2.FILLED, cv2.LINE_AA)
    noise = rng.normal(0, 4, (H, W, 1))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def draw_car(img: np.ndarray, x: int, y: int, colour: tuple[int, int, int], facing_right: bool) -> None:
    cv2.rectangle(img, (x, y), (x + 70, y + 20), colour, cv2.FILLED, cv2.LINE_AA)
    cab = (x + 14, y - 14, x + 50, y) if facing_right else (x + 20, y - 14, x + 56, y)
    cv2.rectangle(img, cab[:2], cab[2:], colour, cv2.FILLED, cv2.LINE_AA)
    cv2.rectangle(img, (cab[0] + 4, cab[1] + 3), (cab[2] - 4, cab[3] - 2), (170, 210, 235), cv2.FILLED)
    for wx in (x + 14, x + 56):
        cv2.circle(img, (wx, y + 20), 8, (25, 25, 25), cv2.FILLED, cv2.LINE_AA)
        cv2.circle(img, (wx, y + 20), 3, (160, 160, 160), cv2.FILLED, cv2.LINE_AA)
    light = x + 66 if facing_right else x + 1
    cv2.rectangle(img, (light, y + 4), (light + 3, y + 9), (255, 240, 160), cv2.FILLED)


def draw_walker(img: np.ndarray, x: int, i: int) -> None:
    swing = int(5 * np.sin(i * 0.5))
    cv2.circle(img, (x, 80), 5, (230, 190, 160), cv2.FILLED, cv2.LINE_AA)
    cv2.rectangle(img, (x - 5, 86), (x + 5, 101), (200, 60, 60), cv2.FILLED)
    cv2.line(img, (x - 2, 101), (x - 2 + swing, 114), (40, 40, 90), 3, cv2.LINE_AA)
    cv2.line(img, (x + 2, 101), (x + 2 - swing, 114), (40, 40, 90), 3, cv2.LINE_AA)


def street_frame(bg: np.ndarray, i: int, n: int) -> np.ndarray:
    t = i / (n - 1)
    img = bg.copy()
    draw_walker(img, int(_lerp(300, 200, t)), i)
    draw_car(img, int(_lerp(330, -80, t)), 128, (200, 40, 40), facing_right=False)  # far lane, leftwards
    draw_car(img, int(_lerp(-80, 300, t)), 164, (40, 90, 200), facing_right=True)  # near lane, rightwards
    return img


# ---------------------------------------------------------------------------------------------


def write_video(path: Path, frames) -> None:
    enc = VideoEncoder(path, "mp4", "libx264", W, H, "yuv420p", FPS, codec_options=X264,
                       container_options={"movflags": "+faststart"})
    try:
        for frame in frames:
            enc.encode(frame, "rgb24")
    except BaseException:
        enc.abort()
        raise
    enc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    bg = shapes_background(rng)
    n = int(2.5 * FPS)
    write_video(args.out / "shapes.mp4", (shapes_frame(bg, i, n) for i in range(n)))

    bg = street_background(rng)
    n = 3 * FPS
    write_video(args.out / "street.mp4", (street_frame(bg, i, n) for i in range(n)))
    cv2.imwrite(str(args.out / "photo.png"), cv2.cvtColor(street_frame(bg, 36, n), cv2.COLOR_RGB2BGR))

    for name in ("shapes.mp4", "street.mp4", "photo.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
