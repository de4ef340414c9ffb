"""Reading one image file safely: every failure becomes an `ImgclsError` naming the file."""

from __future__ import annotations

import errno
import os
import stat
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

from imgcls.errors import ImgclsError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_PIXELS = 89_478_485  # PIL's default decompression-bomb limit, made an error instead of a warning
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a half-grey image


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (RGBA, P, CMYK, I;16, LA, ...) to L (channels=1) or RGB (channels=3)."""
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent pixels -> white
        img = Image.alpha_composite(background, rgba)
    return img.convert(target)


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise `ImgclsError` unless `path` is a regular file: opening a pipe would block, a link loop or dangling link fails."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImgclsError(f"{path}: " + ("a broken symbolic link" if os.path.islink(path) else "no such file")) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImgclsError(f"{path}: a symbolic link loop") from None
        raise ImgclsError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImgclsError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImgclsError(f"{path}: not a regular file (a pipe, socket or device)")


def open_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Open, fully decode and convert an image; raise `ImgclsError` naming `path` if it cannot be read."""
    if isinstance(path, (str, os.PathLike)):
        check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImgclsError(f"{path}: image too large ({img.width}x{img.height} pixels)")
                img.load()
                return to_mode(img, channels)
    except ImgclsError:
        raise
    except FileNotFoundError:
        raise ImgclsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImgclsError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImgclsError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImgclsError(f"{path}: cannot read image ({e})") from None
