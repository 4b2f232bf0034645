"""`mindspore.dataset` pipelines that yield float32 images in [-1, 1], shaped (C, H, W).

- `fashion_mnist` / `mnist`: the original gzipped IDX files, read with NumPy.
- `image_folder`: every image file under a folder (recursively), decoded with Pillow, converted
  to RGB or grayscale, resized, centre-cropped. Files that do not decode are named in a warning
  and skipped (or, with strict=True, are an error), before any worker starts.
"""
from __future__ import annotations

import gzip
import math
import os
import warnings
from pathlib import Path

import mindspore.dataset as ds
import mindspore.dataset.vision as vision
import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpm_ms.data import cifar10
from ddpm_ms.data.paths import DATA_ENV, DEFAULT_ROOTS, FOLDERS

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_DOWNLOAD_NAME = {"fashion_mnist": "fashion-mnist", "mnist": "mnist"}
# What the label integers of each IDX data set mean.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "mnist": tuple("0123456789"),
    "cifar10": cifar10.CLASSES,
}


class DataError(RuntimeError):
    """The data is missing or unreadable; the message says where and what to do.

    A message that tells the user to point at another folder names the command's folder flag
    as FOLDER_FLAG: train.py's `--data` by default, and `for_flag` words it for a command whose
    flag is another (`--data-root`, `--root`)."""

    FOLDER_FLAG = "{folder_flag}"

    def __init__(self, message: str):
        self.template = message
        super().__init__(self.for_flag("--data"))

    def for_flag(self, flag: str) -> str:
        """The message with `flag` as the flag that names the data folder."""
        return self.template.replace(self.FOLDER_FLAG, flag)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its declared shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable IDX file ({e}); download it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number); download it again")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} holds {len(raw) - offset} bytes of data, its header promises {np.prod(dims)}: "
                        "the file is truncated; download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _default_note(name: str) -> str:
    """Where the default folder of `name` comes from, and the other way to choose it."""
    if os.environ.get(DATA_ENV):
        return f" (the default: {FOLDERS[name]}/ under {DATA_ENV}={os.environ[DATA_ENV]})"
    return f" (the checkout's embedded copy; {DATA_ENV} names another folder that holds {FOLDERS[name]}/)"


def load_idx_dataset(name: str, root=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of Fashion-MNIST or MNIST from `root`."""
    default = root is None
    root = DEFAULT_ROOTS[name] if default else Path(root)
    image_file, label_file = (root / f for f in IDX_FILES[split])
    missing = [p.name for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise DataError(
            f"{name}: {', '.join(missing)} not found in {root}{_default_note(name) if default else ''}. Get the "
            f"files with `python -m ddpm_ms.data.download {_DOWNLOAD_NAME[name]} --to {root}` "
            f"or pass {DataError.FOLDER_FLAG} DIR pointing to a folder that holds them.")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def _to_model_range(channels):
    """uint8 HWC -> float32 CHW in [-1, 1] ((x - 127.5) / 127.5 maps 0 and 255 exactly to -1 and 1)."""
    return [vision.Normalize(mean=[127.5] * channels, std=[127.5] * channels), vision.HWC2CHW()]


def _finish(dataset, batch_size, random_flip, num_workers, columns, channels):
    ops_list = ([vision.RandomHorizontalFlip()] if random_flip else []) + _to_model_range(channels)
    dataset = dataset.map(operations=ops_list, input_columns=["image"], num_parallel_workers=num_workers)
    return dataset.batch(batch_size, drop_remainder=True).project(columns)


def idx_dataset(name: str, root=None, batch_size=32, split="train", shuffle=True, random_flip=False,
                num_workers=2, with_labels=False, pad=0, num_shards=None, shard_id=None):
    """Batched pipeline over Fashion-MNIST or MNIST; columns "image" (and "label"). `pad` black
    pixels are added on every side (2: 32x32 images). num_shards / shard_id: this rank's share of
    each epoch's shuffle (data-parallel training)."""
    images, labels = load_idx_dataset(name, root, split)
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    if len(images) < batch_size:
        raise DataError(f"{name} {split} has {len(images)} images, fewer than one batch of {batch_size}")
    source = {"image": images[..., None], "label": labels.astype(np.int32)}
    dataset = ds.NumpySlicesDataset(source, shuffle=shuffle, **_shard(num_shards, shard_id))
    return _finish(dataset, batch_size, random_flip, num_workers, ["image", "label"] if with_labels else ["image"], 1)


def _shard(num_shards, shard_id) -> dict:
    return {"num_shards": num_shards, "shard_id": shard_id} if num_shards else {}


def cifar10_dataset(root=None, batch_size=128, split="train", shuffle=True, random_flip=True, num_workers=2,
                    with_labels=False, num_shards=None, shard_id=None):
    """Batched pipeline over CIFAR-10 (the binary archive or a folder per class, see data/cifar10.py);
    columns "image" (3, 32, 32) in [-1, 1] (and "label")."""
    root = DEFAULT_ROOTS["cifar10"] if root is None else Path(root)
    dataset = cifar10.cifar10_source(root, split, shuffle, num_shards, shard_id)
    if dataset.get_dataset_size() < batch_size:
        raise DataError(f"cifar10 {split} in {root} has {dataset.get_dataset_size()} images, fewer than one batch "
                        f"of {batch_size}")
    return _finish(dataset, batch_size, random_flip, num_workers, ["image", "label"] if with_labels else ["image"], 3)


def scan_image_folder(root=None, strict: bool = False) -> list[Path]:
    """Every decodable image under `root` (default: the embedded cats), sorted. A file with an image
    extension that does not decode is named in a warning and left out (an error when strict)."""
    default = root is None
    root = DEFAULT_ROOTS["image_folder"] if default else Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root}{_default_note('image_folder') if default else ''} does not exist; "
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
                                  num_parallel_workers=1, **_shard(num_shards, shard_id))
    # Resize the shorter side so that both sides cover the target, then crop the centre.
    resize = [vision.Resize(max(h, w), vision.Inter.BICUBIC), vision.CenterCrop((h, w))]
    dataset = dataset.map(operations=resize, input_columns=["image"], num_parallel_workers=num_workers)
    return _finish(dataset, batch_size, random_flip, num_workers, ["image"], channels)


def build_dataset(data_cfg, model_cfg, batch_size, shuffle=True, num_shards=None, shard_id=None):
    """The training pipeline a config asks for: columns "image", and "label" for a class-conditional
    model; with num_shards, shard `shard_id` of every epoch (batch_size is this shard's)."""
    shard = _shard(num_shards, shard_id)
    if data_cfg.dataset in ("fashion_mnist", "mnist"):
        side = 28 + 2 * int(data_cfg.pad)
        if tuple(model_cfg.image_size) != (side, side) or model_cfg.channels != 1:
            padded = f" padded by {data_cfg.pad} to {side}x{side}" if data_cfg.pad else ""
            raise ValueError(f"{data_cfg.dataset} images are 28x28 grayscale{padded}; the model is configured for "
                             f"{model_cfg.image_size} with {model_cfg.channels} channels (data.pad 2 makes "
                             "32x32 images)")
        num_classes = int(getattr(model_cfg, "num_classes", 0))
        if num_classes and num_classes < len(CLASS_NAMES[data_cfg.dataset]):
            raise ValueError(f"{data_cfg.dataset} has {len(CLASS_NAMES[data_cfg.dataset])} classes but the model is "
                             f"configured for num_classes={num_classes}: set it to "
                             f"{len(CLASS_NAMES[data_cfg.dataset])} (or 0 for an unconditional model)")
        return idx_dataset(data_cfg.dataset, data_cfg.root, batch_size, shuffle=shuffle,
                           random_flip=data_cfg.random_flip, num_workers=data_cfg.num_workers,
                           with_labels=bool(num_classes), pad=int(data_cfg.pad), **shard)
    if data_cfg.dataset == "cifar10":
        if tuple(model_cfg.image_size) != (32, 32) or model_cfg.channels != 3:
            raise ValueError(f"cifar10 images are 32x32 RGB; the model is configured for {model_cfg.image_size} with "
                             f"{model_cfg.channels} channels: start from --preset cifar10")
        return cifar10_dataset(data_cfg.root, batch_size, shuffle=shuffle, random_flip=data_cfg.random_flip,
                               num_workers=data_cfg.num_workers, with_labels=bool(model_cfg.num_classes), **shard)
    return image_folder_dataset(data_cfg.root, model_cfg.image_size, model_cfg.channels, batch_size,
                                shuffle=shuffle, random_flip=data_cfg.random_flip,
                                num_workers=data_cfg.num_workers, strict=data_cfg.strict,
                                min_images_per_epoch=max(batch_size * (num_shards or 1), 256), **shard)
