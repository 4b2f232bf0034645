"""Fashion-MNIST and MNIST: the original gzipped IDX files, read with NumPy, as registered data sets."""
from __future__ import annotations

import gzip
from pathlib import Path

import mindspore.dataset as ds
import numpy as np

from ddpm_ms.data.errors import DataError
from ddpm_ms.data.paths import fetch_command, resolve
from ddpm_ms.data.transforms import finish, shard
from ddpm_ms.registry import DATASETS, Dataset, Download

IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


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


def split_files(name: str, root, split: str) -> list[Path]:
    """The image and label files of `split` of IDX data set `name` (existing or not)."""
    folder, _ = resolve(name, root)
    return [folder / f for f in IDX_FILES[split]]


def load_idx_dataset(name: str, root=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of Fashion-MNIST or MNIST from `root` (default: its folder
    under the data root)."""
    folder, note = resolve(name, root)
    image_file, label_file = (folder / f for f in IDX_FILES[split])
    missing = [p.name for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise DataError(
            f"{name}: {', '.join(missing)} not found in {folder}{note}. Get the files with "
            f"`{fetch_command(name, folder)}` or pass {DataError.FOLDER_FLAG} DIR pointing to a folder that holds them.")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def idx_dataset(name: str, root=None, batch_size=32, split="train", shuffle=True, random_flip=False,
                num_workers=2, with_labels=False, pad=0, num_shards=None, shard_id=None):
    """Batched pipeline over Fashion-MNIST or MNIST; columns "image" (and "label"). `pad` black
    pixels are added on every side (2: 32x32 images). num_shards / shard_id: this rank's share of
    each epoch's shuffle (data-parallel training)."""
    images, labels = load_idx_dataset(name, root, split)
    if len(images) < batch_size:
        raise DataError(f"{name} {split} has {len(images)} images, fewer than one batch of {batch_size}")
    source = {"image": images[..., None], "label": labels.astype(np.int32)}
    dataset = ds.NumpySlicesDataset(source, shuffle=shuffle, **shard(num_shards, shard_id))
    columns = ["image", "label"] if with_labels else ["image"]
    return finish(dataset, batch_size, random_flip, num_workers, columns, 1, pad)


def _register(name: str, folder: str, classes: tuple, urls: tuple, md5s: tuple, class_words: tuple) -> None:
    def load(data, image_shape, batch_size, split="train", shuffle=True, with_labels=False, num_shards=None,
             shard_id=None):
        return idx_dataset(name, data.root, batch_size, split, shuffle=shuffle, random_flip=data.random_flip,
                           num_workers=data.num_workers, with_labels=with_labels, pad=int(data.pad),
                           num_shards=num_shards, shard_id=shard_id)

    def load_split(root, split):
        images, labels = load_idx_dataset(name, root, split)
        return images[:, None], labels.astype(np.int64)

    files = dict(zip(IDX_FILES["train"] + IDX_FILES["test"], md5s))
    DATASETS.register(Dataset(name, load, folder, image_shape=(1, 28, 28), class_names=classes, load_split=load_split,
                              split_files=lambda root, split: split_files(name, root, split),
                              download=Download(urls=urls, files=files), classifier=f"{name}_classifier.ckpt",
                              class_words=class_words, flips=False))


# Each class's words for the text-image model (ddpm_ms.textimage): the first list trains, the second is
# held out (other spellings and combinations of the same words; none equals a training name once
# lower-cased and split into words).
_register(
    "fashion_mnist", "fashion-mnist",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe", "bef4ecab320f06d8554ea6380940ec79",
     "bb300cfdad3c16e7a12a480ee83cd310"),
    ((["t-shirt", "tshirt", "tee", "top", "tee shirt"], ["t shirts", "tees", "tops"]),
     (["trouser", "trousers", "pants", "slacks"], ["pair of pants", "pair of trousers"]),
     (["pullover", "sweater", "jumper"], ["pullovers", "sweaters", "jumpers"]),
     (["dress", "gown", "frock"], ["dresses", "gowns"]),
     (["coat", "jacket", "overcoat"], ["coats", "jackets"]),
     (["sandal", "sandals", "flip flop"], ["flip flops", "summer sandal"]),
     (["shirt", "blouse", "button shirt"], ["shirts", "blouses", "button-down shirt"]),
     (["sneaker", "sneakers", "trainer", "running shoe"], ["trainers", "running shoes", "sneaker shoe"]),
     (["bag", "handbag", "purse", "tote bag"], ["bags", "handbags", "purses"]),
     (["ankle boot", "boot", "boots"], ["ankle boots", "short boot"])))
_register(
    "mnist", "mnist", tuple("0123456789"),
    ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432", "9fb629c4189551a2d022fa330f9573f3",
     "ec29112dd5afa0611ce80d1b7f02629c"),
    tuple(([f"digit {w}", w, str(i), f"number {w}"], [f"{w}s", f"numeral {i}", f"the number {i}"])
          for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])))
