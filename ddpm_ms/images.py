"""The one reader of a user's single image (an init image, a mask, a demo upload, a figure's photo):
any file PIL opens, in any mode, as 8-bit grey or RGB, upright, with its size checked before decoding.
Transparent pixels become black, the background of the data sets here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # a larger file is refused before it is decoded (a photo is rarely above 50 MP)


def open_image(path, what: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image file `path`, decoded, turned upright by its EXIF orientation; one clear error for a
    missing file, one PIL cannot read, or one of more than `max_pixels` pixels (checked before decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > max_pixels:
                raise ValueError(f"{what} file {path} is {opened.width}x{opened.height} pixels, more than the "
                                 f"{max_pixels:,} this reader decodes; scale it down first (the model makes small "
                                 "images anyway)")
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what} file {path} is not an image PIL can read ({e}); pass a PNG or JPEG") from None


def in_mode(image: Image.Image, channels: int) -> Image.Image:
    """`image` as 8-bit grey ("L", channels 1) or RGB (channels 3), whatever its mode: 16- and 32-bit
    grey scaled from its full range, transparency (RGBA, LA, a palette's) composited onto black (the
    data's background), palettes and CMYK converted by PIL."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB" if channels == 3 else "L")
