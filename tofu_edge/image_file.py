"""One image file as 8-bit RGB, upright, with memory bounded and one-line errors: the loader behind every command
that reads photos (eval, calibrate, tune, export's parity and INT8 photos, visualize, and run on a device).

Pillow and numpy only (no torch), so a device install reads images the same way.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tofu_edge.errors import TofuError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["read_rgb", "to_rgb", "image_files", "IMAGE_SUFFIXES", "DRAFT_SIDE", "TRANSPARENT_BACKGROUND"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # what a folder of photos is read for, in any case

DRAFT_SIDE = 1024  # a large JPEG is decoded at 1/2, 1/4 or 1/8 scale while both sides stay at least this long
TRANSPARENT_BACKGROUND = (255, 255, 255, 255)  # what transparent pixels become: white, as a page shows them
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The image files among ``paths`` (a folder's ``iterdir``, ``glob`` or ``rglob``), sorted: files with one of
    `IMAGE_SUFFIXES`, hidden ones left out, each file once (two links to one file count once)."""
    files, seen = [], set()
    for path in sorted(paths):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            files.append(path)
    return files


def read_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB, turned upright by its EXIF orientation.

    Every mode becomes RGB by what it means (`to_rgb`). A large JPEG is decoded reduced (DCT scaling, never below
    `DRAFT_SIDE` pixels a side) and an image above Pillow's decompression-bomb limit is refused before it is
    decoded, so memory stays bounded whatever the folder holds.

    Raises:
        TofuError: the file is missing, is not an image Pillow can read, is truncated or damaged, or is too large;
            the message names the file.

    Shapes:
        returns: [H, W] RGB (a loaded ``PIL.Image.Image``)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TofuError(f"image {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # below the limit: decoded, bounded
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft(None, (DRAFT_SIDE, DRAFT_SIDE))
                return to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise TofuError(f"cannot read image {path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise TofuError(f"cannot read image {path}: {_too_large(error)}; shrink it first") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # Pillow's errors for a damaged file
        raise TofuError(f"cannot read image {path}: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as a new 8-bit RGB image: 16-bit greys scaled (65535 -> 255, not clipped), transparent pixels
    (RGBA, LA, a palette with a transparent colour) laid over `TRANSPARENT_BACKGROUND`, CMYK and greys converted.

    Shapes:
        image: [H, W] in any Pillow mode
        returns: [H, W] RGB
    """
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        # a 16-bit grey (a PNG opens as I or I;16): 0..65535 -> 0..255, where convert("L") would clip at 255
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _too_large(error: Exception) -> str:
    """Pillow's decompression-bomb message in our words: the image's pixel count against the limit."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
    limit = 2 * Image.MAX_IMAGE_PIXELS  # Pillow warns above its limit and refuses above twice it
    return f"it has {pixels}, more than the {limit / 1e6:.0f} that are decoded safely"
