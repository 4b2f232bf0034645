"""A folder of the user's images: every image file under it (recursively), decoded with Pillow,
converted to RGB or grayscale, resized and centre-cropped to the model's size. Files that do not
decode are named in a warning and skipped (or, with strict, are an error), before any worker starts.
It has no labels."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import mindspore.dataset as ds
import mindspore.dataset.vision as vision
import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpm_ms.data.errors import DataError
from ddpm_ms.data.paths import resolve
from ddpm_ms.data.transforms import finish, shard
from ddpm_ms.registry import DATASETS, Dataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def scan_image_folder(root=None, strict: bool = False) -> list[Path]:
    """Every decodable image under `root` (default: the embedded cats), sorted. A file with an image
    extension that does not decode is named in a warning and left out (an error when strict)."""
    root, note = resolve("image_folder", root)
    if not root.is_dir():
        raise DataError(f"image folder {root}{note} does not exist; "
                        f"pass {DataError.FOLDER_FLAG} DIR with your images (PNG, JPEG, BMP, GIF, WebP, TIFF)")
    candidates = sorted(p for p in root.rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    good, bad = [], []
    for path in candidates:
        try:
            with Image.open(path) as im:
                im.load()  # decode fully: a truncated file passes verify() but fails here
            good.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if strict:
                raise DataError(f"{path} is not a readable image ({e}); remove or replace it") from e
            bad.append(path)
            warnings.warn(f"skipping {path}: not a readable image ({type(e).__name__}: {e})", stacklevel=2)
    if not good:
        raise DataError(f"no readable images in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
                        + (f"; {len(bad)} file(s) failed to decode" if bad else "") + ")")
    return good


class _ImageFiles:
    """Random-access source: path -> uint8 HWC array in the requested colour mode."""

    def __init__(self, paths, channels, repeat):
        self.paths, self.mode, self.repeat = list(paths), ("RGB" if channels == 3 else "L"), repeat

    def __len__(self):
        return len(self.paths) * self.repeat

    def __getitem__(self, i):
        with Image.open(self.paths[i % len(self.paths)]) as im:
            arr = np.asarray(im.convert(self.mode), dtype=np.uint8)
        return (arr if arr.ndim == 3 else arr[..., None],)


def image_folder_dataset(root=None, image_size=(64, 64), channels=3, batch_size=16, shuffle=True,
                         random_flip=True, num_workers=2, strict=False, min_images_per_epoch=None,
                         num_shards=None, shard_id=None):
    """Batched pipeline over a folder of images; column "image".

    A small folder is cycled so that an epoch holds at least `min_images_per_epoch` images
    (default: one batch); the cats preset trains on two photos.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    paths = scan_image_folder(root, strict)
    repeat = max(1, math.ceil((min_images_per_epoch or batch_size) / len(paths)))
    dataset = ds.GeneratorDataset(_ImageFiles(paths, channels, repeat), column_names=["image"], shuffle=shuffle,
                                  num_parallel_workers=1, **shard(num_shards, shard_id))
    # Resize the shorter side so that both sides cover the target, then crop the centre.
    resize = [vision.Resize(max(h, w), vision.Inter.BICUBIC), vision.CenterCrop((h, w))]
    dataset = dataset.map(operations=resize, input_columns=["image"], num_parallel_workers=num_workers)
    return finish(dataset, batch_size, random_flip, num_workers, ["image"], channels)


def _load(data, image_shape, batch_size, split="train", shuffle=True, with_labels=False, num_shards=None,
          shard_id=None):
    if with_labels:
        raise DataError("an image folder has no labels: train it unconditionally (model.num_classes 0)")
    channels, h, w = image_shape
    return image_folder_dataset(data.root, (h, w), channels, batch_size, shuffle=shuffle,
                                random_flip=data.random_flip, num_workers=data.num_workers, strict=data.strict,
                                min_images_per_epoch=max(batch_size * (num_shards or 1), 256),
                                num_shards=num_shards, shard_id=shard_id)


DATASETS.register(Dataset("image_folder", _load, "cats"))
