"""v → a procedural creature (PNG). numpy + Pillow only, no torch, no downloaded weights.

Every feature is a smooth function of v: the body outline is a Fourier series whose
coefficients are tanh of coordinates of v, colours come from angles of coordinate pairs (so
they vary continuously around the hue circle), and eyes, ears, mouth, spots, antennae and feet
move and resize smoothly. Close vectors therefore draw close creatures, and independent
Gaussian vectors draw clearly different ones. The drawing is deterministic for a given Pillow
version, but neither the PNG bytes (zlib settings) nor the antialiased pixels are guaranteed to be
identical across Pillow versions, so a verifier must not compare bytes: `png_matches` decodes a
PNG, re-renders v with the installed Pillow and compares pixels with a tolerance that absorbs
antialiasing differences but refuses the picture of a visibly different v.
"""

from __future__ import annotations

import colorsys
import io
import math
import struct
import zlib
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


def portrait(v: Sequence[float]) -> list[float]:
    """The 64 numbers a fingerprint's picture is drawn from: v itself for one layer, else the
    z-scored sum of the per-layer vectors (still ≈ N(0, 1) per coordinate), so that an offspring
    that drops or repeats a layer of many still draws nearly the same creature."""
    x = np.asarray([float(e) for e in v], dtype=np.float64)
    if x.size < M_MIN or x.size % M_MIN or not np.isfinite(x).all():
        raise ValueError(f"render needs finite numbers in whole layers of {M_MIN}, got {x.size}")
    if x.size == M_MIN:
        return x.tolist()
    from circuits.finish import zscore  # numpy only

    return zscore(x.reshape(-1, M_MIN).sum(axis=0)).tolist()


def render(v: Sequence[float], size: int = SIZE) -> Image.Image:
    """Draw the creature of v (one or more layers of 64 numbers; see `portrait`)."""
    v = portrait(v)
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


# ---------------------------------------------------------------------------------------------
# Version-tolerant comparison of a PNG with the rendering of v.
#
# Why a tolerance rather than a Pillow-independent (numpy) renderer: render() must keep its
# current output (tests and README images rely on it), a numpy rasteriser of the same polygons,
# thick curved polylines, outlined ellipses and Lanczos downsampling would be a lot of code, and
# even then exact pixel equality would hang on float rounding (libm sin/cos/tanh, numpy
# summation order) across platforms. Comparing decoded pixels with a tolerance removes the PNG
# encoding from the question entirely and absorbs antialiasing drift, whatever its source.
#
# Statistic. E = per-pixel "envelope excess": how far (max over R, G, B) a pixel of one image
# lies outside the [min, max] range of the other image's 3x3 neighbourhood, taken both ways
# (png vs render, render vs png) and the larger kept. An edge that moved by less than a pixel or
# was antialiased differently stays inside the envelope (E ~ 0); a painted patch, a moved or
# resized feature, or a changed colour does not. Two rules, either one refuses:
#   local: more than _LOCAL_MAX_PIXELS pixels with E > _LOCAL_LEVEL (shapes, edits);
#   area:  more than _AREA_MAX_PIXELS pixels with E > _AREA_LEVEL (colour shifts over regions).
#
# Measurements (Pillow 13.0.0 installed; 14 vectors: 12 seeded Gaussians + linspace + zeros;
# "pixels" = count out of 65536):
#   same v, Pillow 10.0.1 and 11.0.0 vs 13.0.0: bytes differ for 6/14 vectors; raw pixel
#     differences at <= 16 pixels, max channel difference 18, <= 2 pixels differ by > 8;
#     E max = 3, so 0 pixels with E > 4. (Pillow 12.0.0 is byte-identical to 13.0.0.)
#   same v, simulated much larger antialiasing changes (whole drawing shifted by 1/3 px,
#     supersampling 2 or 4 instead of 3, BICUBIC instead of LANCZOS), 6 vectors each:
#     pixels with E > 32: max 15; pixels with E > 8: max 463 (a BOX filter instead of LANCZOS
#     gives up to 1329 and is refused: that is a different picture pipeline, not drift).
#   v vs v with one coordinate + 0.5 (6 vectors x 64 coordinates): pixels with E > 32 median 54,
#     E > 8 median 158; 69% refused by the rules below. The accepted ones change the picture
#     by less than ~1 px in geometry (indistinguishable from antialiasing drift), in colour by
#     <= 8 levels over large areas (pastel background) or <= ~20 levels on < 1% of the image
#     (accent colour of small spots), or move features hidden behind others.
#   v vs v + 0.05 * N(0, I): E > 8 median 899, E > 32 median 127; 97% refused.
#   v vs v + 0.1 * N(0, I) and v + 0.2 * N(0, I): 100% refused (E > 8 >= 1320 pixels).
#   v vs an independent Gaussian v: 100% refused (E > 32 on >= 13251 pixels, median 20612).
#   a 6x6 patch painted in a flat region: 36 pixels with E far above 32 -> refused.
_LOCAL_LEVEL = 32
_LOCAL_MAX_PIXELS = 16
_AREA_LEVEL = 8
_AREA_MAX_PIXELS = 650  # ~1% of the image
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_BYTES = 4 << 20  # a 256x256 RGB PNG is < 200 KB even uncompressed


def _png_structure_error(png: bytes, size: int) -> str | None:
    """Walk the PNG chunks (CRCs, IHDR first, IEND last, nothing after) without decoding pixels."""
    if not png.startswith(_PNG_SIGNATURE):
        return "not a PNG (bad signature)"
    pos, first, seen_idat = len(_PNG_SIGNATURE), True, False
    while True:
        if pos + 8 > len(png):
            return "truncated PNG (missing IEND)"
        length, ctype = struct.unpack(">I4s", png[pos : pos + 8])
        end = pos + 12 + length
        if end > len(png):
            return f"truncated PNG (chunk {ctype!r} cut short)"
        data = png[pos + 8 : end - 4]
        if zlib.crc32(ctype + data) != struct.unpack(">I", png[end - 4 : end])[0]:
            return f"corrupt PNG (bad CRC in chunk {ctype!r})"
        if first:
            if ctype != b"IHDR" or length != 13:
                return "corrupt PNG (IHDR is not the first chunk)"
            w, h, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", data)
            if (w, h) != (size, size):
                return f"PNG is {w}x{h}, expected {size}x{size}"
            if (depth, colour) != (8, 2):
                return f"PNG is not 8-bit RGB (bit depth {depth}, colour type {colour})"
            first = False
        elif ctype == b"IDAT":
            seen_idat = True
        elif ctype in (b"acTL", b"fcTL", b"fdAT"):
            return "animated PNG refused"
        elif ctype == b"IEND":
            if end != len(png):
                return "PNG has data after IEND"
            return None if seen_idat else "PNG has no image data"
        pos = end


def _decode_png(png: bytes, size: int) -> tuple[np.ndarray | None, str]:
    if not isinstance(png, (bytes, bytearray, memoryview)):
        return None, f"expected PNG bytes, got {type(png).__name__}"
    png = bytes(png)
    if len(png) > _PNG_MAX_BYTES:
        return None, f"PNG too large ({len(png)} bytes)"
    err = _png_structure_error(png, size)
    if err:
        return None, err
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
            if im.size != (size, size) or im.mode != "RGB":
                return None, f"PNG is {im.mode} {im.size[0]}x{im.size[1]}, expected RGB {size}x{size}"
            im.load()
            pixels = np.asarray(im, dtype=np.int16)
    except Exception as exc:  # never raise on untrusted bytes
        return None, f"cannot decode PNG ({type(exc).__name__}: {exc})"[:200]
    if pixels.shape != (size, size, 3):
        return None, f"decoded PNG has shape {pixels.shape}"
    return pixels, ""


def _envelope_excess(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, how far a lies outside b's 3x3-neighbourhood range and vice versa (max of both)."""

    def envelope(y, op):  # separable 3x3 min or max filter, edges replicated
        p = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="edge")
        rows = op(op(p[:-2], p[1:-1]), p[2:])
        return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])

    def outside(x, y):
        lo, hi = envelope(y, np.minimum), envelope(y, np.maximum)
        return np.maximum(np.maximum(x - hi, lo - x), 0).max(axis=2)

    return np.maximum(outside(a, b), outside(b, a))


def png_matches(png: bytes, v: Sequence[float]) -> tuple[bool, str]:
    """Is `png` the rendering of v, up to Pillow-version differences? Returns (ok, reason).

    `png` must be a well-formed, non-animated 256x256 8-bit RGB PNG (checked chunk by chunk
    before any pixel is decoded, so huge declared dimensions never reach the decoder). Its
    pixels are compared with render(v) drawn by the installed Pillow; PNG encoding is ignored
    and antialiasing differences are tolerated (see the measurements above), while the picture
    of a visibly different v, or a visibly edited picture, is refused. Never raises: any
    problem, including an invalid v, gives (False, reason). reason is "" when ok.
    """
    pixels, err = _decode_png(png, SIZE)
    if pixels is None:
        return False, err
    try:
        expected = np.asarray(render(v, SIZE), dtype=np.int16)
    except Exception as exc:
        return False, f"cannot render v ({type(exc).__name__}: {exc})"[:200]
    if np.array_equal(pixels, expected):
        return True, ""
    excess = _envelope_excess(pixels, expected)
    local = int((excess > _LOCAL_LEVEL).sum())
    if local > _LOCAL_MAX_PIXELS:
        return False, (f"PNG differs from the rendering of v at {local} pixels "
                       f"(by more than {_LOCAL_LEVEL} levels)")
    area = int((excess > _AREA_LEVEL).sum())
    if area > _AREA_MAX_PIXELS:
        return False, (f"PNG colours differ from the rendering of v over {area} pixels "
                       f"(by more than {_AREA_LEVEL} levels)")
    return True, ""
