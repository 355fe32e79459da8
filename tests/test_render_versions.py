"""fingerprint.render.png_matches: is a PNG the creature of v, whichever Pillow version drew it?

The assets in tests/assets/ were drawn by Pillow 10.0.1 and 13.0.0 (render_assets.json lists each
v and the version; tests/assets/make_render_assets.py regenerates them). The two versions encode
different bytes and antialias a few pixels differently, so byte comparison cannot work across
versions; png_matches compares decoded pixels with a tolerance instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import struct
import zlib

import numpy as np
import PIL
import pytest
from PIL import Image

from fingerprint.render import SIZE, png_bytes, png_matches, render, save_png

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
META = json.loads((ASSETS / "render_assets.json").read_text())["assets"]


def _asset(entry) -> bytes:
    data = (ASSETS / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    return data


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.array(im.convert("RGB"))


def _encode(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, format="PNG", **kw)
    return buf.getvalue()


def _save(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _refused(png, v) -> str:
    ok, reason = png_matches(png, v)
    assert ok is False and isinstance(reason, str) and reason, (ok, reason)
    return reason


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _raw_png(width: int, height: int, raw: bytes, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def test_assets_come_from_two_pillow_versions_that_disagree_on_bytes_and_pixels():
    versions = {e["pillow"] for e in META}
    assert len(versions) >= 2, versions
    by_seed: dict = {}
    for e in META:
        by_seed.setdefault(e["seed"], []).append(e)
    for seed, entries in by_seed.items():
        assert len({e["pillow"] for e in entries}) >= 2
        a, b = (_asset(e) for e in entries[:2])
        assert entries[0]["v"] == entries[1]["v"]
        assert a != b, f"seed {seed}: the two versions' PNGs are identical; the assets test nothing"
        assert not np.array_equal(_pixels(a), _pixels(b)), f"seed {seed}: pixels identical"


def test_png_drawn_by_another_pillow_version_is_accepted_for_its_v():
    # whichever Pillow is installed, at least one of the two asset versions is "another" one
    assert any(e["pillow"] != PIL.__version__ for e in META)
    for e in META:
        assert png_matches(_asset(e), e["v"]) == (True, ""), (e["file"], PIL.__version__)


def test_own_rendering_is_accepted_whatever_the_png_encoder_settings():
    for v in [np.random.default_rng(7).standard_normal(64), np.linspace(-2, 2, 64), np.zeros(64)]:
        assert png_matches(png_bytes(v), v) == (True, "")
        pixels = np.asarray(render(v))
        assert png_matches(_encode(pixels, compress_level=0), v) == (True, "")
        assert png_matches(_encode(pixels, optimize=True), v) == (True, "")


def test_render_output_is_unchanged_for_the_pillow_version_that_drew_an_asset(tmp_path):
    for e in META:
        if e["pillow"] == PIL.__version__:
            assert np.array_equal(_pixels(_asset(e)), np.asarray(render(e["v"]))), e["file"]
    v = META[0]["v"]
    save_png(v, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes() == png_bytes(v)
    assert png_matches((tmp_path / "f.png").read_bytes(), v) == (True, "")


def test_png_of_another_pillow_version_is_refused_for_an_independent_v():
    g = np.random.default_rng(123)
    for e in META:
        for _ in range(2):
            _refused(_asset(e), g.standard_normal(64))
    others = {e["seed"]: e["v"] for e in META}
    for e in META:  # nor for another asset's v
        for seed, v in others.items():
            if seed != e["seed"]:
                _refused(_asset(e), v)


@pytest.mark.parametrize("coordinate", [8, 10, 20, 51])  # position, size, belly width, mouth curve
def test_png_is_refused_for_v_with_one_visible_coordinate_moved_by_half(coordinate):
    for e in META:
        w = np.array(e["v"])
        w[coordinate] += 0.5
        _refused(_asset(e), w)


def test_png_is_refused_for_a_small_random_perturbation_of_v():
    g = np.random.default_rng(5)
    for e in META:
        _refused(_asset(e), np.array(e["v"]) + 0.1 * g.standard_normal(64))


@pytest.mark.parametrize("where", ["belly", "background", "body"])
def test_png_with_a_painted_6x6_patch_is_refused(where):
    e = next(e for e in META if e["pillow"] != PIL.__version__)
    pixels = _pixels(_asset(e)).astype(np.int16)
    cy, cx = {"belly": (150, 128), "background": (12, 12), "body": (105, 100)}[where]
    patch = pixels[cy - 3 : cy + 3, cx - 3 : cx + 3]
    patch[:] = 255 - patch.mean(axis=(0, 1)).round()  # a colour contrasting with what was there
    assert png_matches(_encode(pixels), e["v"])[0] is False


def test_truncated_non_png_wrong_size_and_malformed_bytes_are_refused_with_a_reason():
    e = META[0]
    good, v = _asset(e), e["v"]
    pixels = _pixels(good)
    cases = {
        "empty": b"",
        "text": b"hello, I am not a PNG",
        "signature only": good[:8],
        "truncated header": good[:20],
        "truncated in image data": good[: len(good) // 2],
        "missing IEND": good[:-12],
        "trailing data": good + b"junk",
        "bad CRC": good[:40] + bytes([good[40] ^ 0xFF]) + good[41:],
        "JPEG": _save(Image.fromarray(pixels), "JPEG"),
        "128x128": _encode(np.asarray(render(v, 128))),
        "257x256": _encode(np.zeros((256, 257, 3))),
        "RGBA": _save(Image.fromarray(pixels).convert("RGBA")),
        "grey": _save(Image.fromarray(pixels).convert("L")),
        "palette": _save(Image.fromarray(pixels).convert("P")),
        "huge dimensions (decompression bomb)": _raw_png(1 << 20, 1 << 20, b"\0" * 1024),
        "image data too short": _raw_png(SIZE, SIZE, b"\0" * 1024),
        "not bytes": None,
        "str": "\x89PNG",
    }
    reasons = {name: _refused(png, v) for name, png in cases.items()}
    assert "256" in reasons["128x128"] and "256" in reasons["257x256"]
    assert "truncated" in reasons["truncated in image data"] and "truncated" in reasons["missing IEND"]
    assert "PNG" in reasons["text"] and "PNG" in reasons["JPEG"]
    assert "1048576" in reasons["huge dimensions (decompression bomb)"]
    # a zlib bomb inside a 256x256 IDAT decodes only the image's worth of data, and is then refused
    _refused(_raw_png(SIZE, SIZE, b"\0" * (16 << 20)), v)
    # an invalid v gives a reason too, never an exception
    _refused(good, [0.0] * 10)
    _refused(good, [float("nan")] * 64)
