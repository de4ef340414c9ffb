"""Reading one image file safely: every failure becomes an `ImgclsError` naming the file."""

from __future__ import annotations

import errno
import os
import stat
import struct

from PIL import Image, ImageFile, UnidentifiedImageError

from imgcls.errors import ImgclsError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_PIXELS = 89_478_485  # PIL's default decompression-bomb limit, made an error instead of a warning
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own guard (a warning above it, an error above twice it) agrees
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


# What Image.open may parse. Pillow's other plugins include EPS, which runs Ghostscript on the file:
# never on untrusted input.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class ImageProblem(ImgclsError):
    """An image that cannot be used; `code` says why: not_an_image, too_many_pixels or unreadable_image."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def decode_image(source, name: str, *, channels: int | None = 3, max_pixels: int = MAX_PIXELS,
                 draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode a file path or binary file object fully; convert to `channels` (None: keep the mode).

    The pixel count is checked from the header before anything is decoded (decompression bombs).
    `draft=(w, h)`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, never below (w, h) (much faster
    when the image is to be shrunk anyway).
    Safe to call from several threads (no global warning filters are touched). Raises `ImageProblem`.
    """
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > max_pixels:
                raise ImageProblem(f"{name}: too many pixels ({img.width}x{img.height}, more than {max_pixels:,}): "
                                   f"a decompression bomb?", "too_many_pixels")
            if draft is not None and img.format == "JPEG":
                img.draft(None, draft)
            img.load()
            return to_mode(img, channels) if channels else img.copy()
    except ImageProblem:
        raise
    except UnidentifiedImageError:
        raise ImageProblem(f"{name}: not an image file (or a format PIL cannot read)", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem(f"{name}: too many pixels: a decompression bomb?", "too_many_pixels") from None
    except FileNotFoundError:
        raise ImageProblem(f"{name}: no such file", "unreadable_image") from None
    except IsADirectoryError:
        raise ImageProblem(f"{name}: is a directory, not an image", "unreadable_image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as e:
        raise ImageProblem(f"{name}: cannot decode the image ({e})", "unreadable_image") from None


def open_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Open, fully decode and convert an image; raise `ImgclsError` naming `path` if it cannot be read."""
    if isinstance(path, (str, os.PathLike)):
        check_regular_file(path)
    return decode_image(path, str(path), channels=channels)
