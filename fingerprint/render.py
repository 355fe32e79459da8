"""v → a procedural creature (PNG). numpy + Pillow only, no torch, no downloaded weights.

Every feature is a smooth function of v: the body outline is a Fourier series whose
coefficients are tanh of coordinates of v, colours come from angles of coordinate pairs (so
they vary continuously around the hue circle), and eyes, ears, mouth, spots, antennae and feet
move and resize smoothly. Close vectors therefore draw close creatures, and independent
Gaussian vectors draw clearly different ones. The verifier re-renders v with this module and
compares the image byte for byte (the drawing is deterministic for a given Pillow version).
"""

from __future__ import annotations

import colorsys
import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
SS = 3  # supersampling factor (antialiasing)
M_MIN = 64


def _t(x: float, s: float = 1.0) -> float:
    return math.tanh(x / s)


def _hue(a: float, b: float) -> float:
    return (math.atan2(a, b) / (2 * math.pi)) % 1.0


def _rgb(h: float, s: float, l: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, min(max(l, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _blob(cx, cy, radius, coeffs, n=240, squash=1.0):
    pts = []
    for i in range(n):
        th = 2 * math.pi * i / n
        r = 1.0
        for j, (a, b) in enumerate(coeffs, start=2):
            r += a * math.cos(j * th) + b * math.sin(j * th)
        r = radius * max(r, 0.35)
        pts.append((cx + r * math.cos(th), cy + squash * r * math.sin(th)))
    return pts


def render(v: Sequence[float], size: int = SIZE) -> Image.Image:
    """Draw the creature of v (length ≥ 64; extra coordinates are ignored)."""
    v = [float(x) for x in v]
    if len(v) < M_MIN or not all(math.isfinite(x) for x in v):
        raise ValueError(f"render needs {M_MIN} finite numbers, got {len(v)}")
    W = size * SS
    u = lambda x: x * W  # noqa: E731  (unit → pixels)
    bg = _rgb(_hue(v[52], v[53]), 0.35, 0.9 + 0.04 * _t(v[54]))
    img = Image.new("RGB", (W, W), bg)
    d = ImageDraw.Draw(img)

    body_h = _hue(v[0], v[1])
    body = _rgb(body_h, 0.55 + 0.3 * _t(v[2]), 0.5 + 0.15 * _t(v[3]))
    dark = _rgb(body_h, 0.5, 0.25 + 0.08 * _t(v[3]))
    accent = _rgb(_hue(v[4], v[5]), 0.7 + 0.2 * _t(v[6]), 0.55 + 0.15 * _t(v[7]))
    cx, cy = u(0.5 + 0.04 * _t(v[8])), u(0.55 + 0.04 * _t(v[9]))
    radius = u(0.27 + 0.04 * _t(v[10]))
    squash = 1.0 + 0.25 * _t(v[11])
    coeffs = [(0.07 * _t(v[12 + 2 * j]), 0.07 * _t(v[13 + 2 * j])) for j in range(4)]

    # antennae / horns (behind the body)
    for side in (-1, 1):
        base = (cx + side * radius * (0.35 + 0.15 * _t(v[55])), cy - radius * 0.7 * squash)
        ang = -math.pi / 2 + side * (0.35 + 0.3 * _t(v[56]))
        length = radius * (0.55 + 0.3 * _t(v[57]))
        bend = 0.5 * _t(v[58])
        mid = (base[0] + 0.5 * length * math.cos(ang + side * bend), base[1] + 0.5 * length * math.sin(ang + side * bend))
        tip = (base[0] + length * math.cos(ang), base[1] + length * math.sin(ang))
        d.line([base, mid, tip], fill=dark, width=max(1, int(u(0.012))), joint="curve")
        rr = u(0.03 + 0.015 * _t(v[59]))
        d.ellipse([tip[0] - rr, tip[1] - rr, tip[0] + rr, tip[1] + rr], fill=accent)

    # ears
    for side in (-1, 1):
        a0 = -math.pi / 2 + side * (0.7 + 0.25 * _t(v[30]))
        ew = 0.35 + 0.15 * _t(v[31])
        el = radius * (1.25 + 0.3 * _t(v[32]))
        p1 = (cx + radius * 0.9 * math.cos(a0 - ew), cy + squash * radius * 0.9 * math.sin(a0 - ew))
        p2 = (cx + radius * 0.9 * math.cos(a0 + ew), cy + squash * radius * 0.9 * math.sin(a0 + ew))
        tip = (cx + el * math.cos(a0 + 0.2 * side * _t(v[33])), cy + squash * el * math.sin(a0))
        d.polygon([p1, tip, p2], fill=body, outline=dark)

    # feet
    for j, side in enumerate((-1, 1)):
        fx = cx + side * radius * (0.45 + 0.15 * _t(v[60]))
        fy = cy + squash * radius * (0.92 + 0.05 * _t(v[61]))
        fw, fh = radius * (0.28 + 0.08 * _t(v[62])), radius * (0.16 + 0.04 * _t(v[63]))
        d.ellipse([fx - fw, fy - fh, fx + fw, fy + fh], fill=dark)

    d.polygon(_blob(cx, cy, radius, coeffs, squash=squash), fill=body, outline=dark)

    # belly
    bw = radius * (0.55 + 0.15 * _t(v[20]))
    bh = radius * squash * (0.45 + 0.12 * _t(v[21]))
    by = cy + squash * radius * (0.35 + 0.08 * _t(v[22]))
    d.ellipse([cx - bw, by - bh, cx + bw, by + bh], fill=_rgb(body_h, 0.45, 0.78 + 0.1 * _t(v[23])))

    # spots
    for j in range(5):
        ang = 2 * math.pi * (j / 5) + 1.2 * _t(v[34 + j])
        dist = radius * (0.55 + 0.15 * _t(v[39 + j]))
        sx, sy = cx + dist * math.cos(ang), cy + squash * dist * math.sin(ang) * 0.8
        sr = radius * (0.09 + 0.05 * _t(v[44 + j]))
        d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=accent)

    # eyes
    gap = radius * (0.38 + 0.12 * _t(v[24]))
    ey = cy - squash * radius * (0.2 + 0.12 * _t(v[25]))
    er = radius * (0.2 + 0.07 * _t(v[26]))
    iris = _rgb(_hue(v[27], v[28]), 0.8, 0.4)
    look = (er * 0.35 * _t(v[29]), er * 0.35 * _t(v[49]))
    for side in (-1, 1):
        ex = cx + side * gap
        d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(250, 250, 250), outline=dark, width=max(1, int(u(0.006))))
        ir = er * (0.55 + 0.1 * _t(v[50]))
        ix, iy = ex + look[0], ey + look[1]
        d.ellipse([ix - ir, iy - ir, ix + ir, iy + ir], fill=iris)
        pr = ir * 0.5
        d.ellipse([ix - pr, iy - pr, ix + pr, iy + pr], fill=(20, 20, 20))

    # mouth: a smooth arc whose curvature and width follow v
    mw = radius * (0.35 + 0.12 * _t(v[18]))
    my = cy + squash * radius * (0.12 + 0.06 * _t(v[19]))
    curve = radius * 0.22 * _t(v[51])
    pts = [(cx + mw * x, my + curve * (1 - x * x)) for x in np.linspace(-1, 1, 25)]
    d.line(pts, fill=dark, width=max(1, int(u(0.01))), joint="curve")

    return img.resize((size, size), Image.LANCZOS)


def png_bytes(v: Sequence[float], size: int = SIZE) -> bytes:
    buf = io.BytesIO()
    render(v, size).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_png(v: Sequence[float], path, size: int = SIZE) -> None:
    with open(path, "wb") as handle:
        handle.write(png_bytes(v, size))


def image_similarity(a: Image.Image, b: Image.Image, size: int = 64) -> float:
    """Pearson correlation of two images' downsampled RGB pixels (1 = identical up to brightness)."""
    x = np.asarray(a.resize((size, size), Image.BILINEAR), dtype=np.float64).ravel()
    y = np.asarray(b.resize((size, size), Image.BILINEAR), dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12))
