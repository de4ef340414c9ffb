"""Hypothesis strategies of hostile image inputs, shared by the fuzz tests and benchmarks/fuzz.py."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _seed_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))


SEEDS = {"png": _encode(_seed_image(), "PNG"), "jpeg": _encode(_seed_image(), "JPEG"),
         "gif": _encode(_seed_image().convert("P"), "GIF"), "bmp": _encode(_seed_image(), "BMP")}


@st.composite
def mutated_images(draw) -> bytes:
    """A real PNG/JPEG/GIF/BMP with bytes flipped, inserted, deleted or the file cut short."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "header"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete" and data:
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        elif op == "header" and len(data) > 24:  # the size fields of a PNG header (or bytes of a JPEG's)
            data[16:24] = draw(st.binary(min_size=8, max_size=8))
    return bytes(data)


@st.composite
def extreme_images(draw) -> bytes:
    """Valid images of extreme shapes (1 x 5000, 3000 x 2, ...) and modes."""
    w = draw(st.sampled_from([1, 2, 3, 7, 64, 1000, 5000]))
    h = draw(st.sampled_from([1, 2, 5, 33, 500, 3000]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "CMYK", "LA"]))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = Image.new("RGB" if mode in ("P", "1") else mode if mode != "I;16" else "I;16", (w, h))
    if mode in ("P", "1"):
        img = img.convert(mode)
    return _encode(img, fmt)


hostile_bytes = st.one_of(st.binary(max_size=2048), mutated_images(), extreme_images())
