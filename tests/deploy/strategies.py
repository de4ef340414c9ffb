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


# Formats the server parses, by the media type a client declares for the part (imgcls.deploy.contract).
MEDIA_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/bmp": "BMP", "image/gif": "GIF", "image/tiff": "TIFF",
                 "image/webp": "WEBP", "image/x-portable-anymap": "PPM"}


@st.composite
def real_images(draw, fmt: str | None = None) -> bytes:
    """A well-formed image file: any of the served formats, mode and size (1 to 300 px a side), random pixels."""
    fmt = fmt or draw(st.sampled_from(sorted(MEDIA_FORMATS.values())))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    modes = {"JPEG": ["RGB", "L", "CMYK"], "PPM": ["RGB", "L"], "BMP": ["RGB", "L", "P"], "GIF": ["P", "L"]}
    mode = draw(st.sampled_from(modes.get(fmt, ["RGB", "L", "RGBA", "P", "LA"])))
    seed = draw(st.integers(0, 2**32 - 1))
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "P": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, bands), dtype=np.uint8)
    img = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode="L" if bands == 1 else None)
    if mode == "P":
        img = img.convert("RGB").convert("P")
    elif mode in ("LA", "CMYK") and img.mode != mode:
        img = Image.frombytes(mode, (w, h), pixels.tobytes())
    return _encode(img, fmt)


def broken_images() -> st.SearchStrategy[bytes]:
    """What a client may send that is no decodable image: random bytes, empty files, mutated real images."""
    return st.one_of(st.binary(max_size=512), mutated_images())
