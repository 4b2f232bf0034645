"""CIFAR-10 as a `mindspore.dataset` pipeline: the official binary archive, or a folder of images.

- The binary version (`cifar-10-binary.tar.gz`, what `python -m ddpm_ms.data.download cifar10`
  fetches and checks): `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`, each 10,000
  records of one label byte and 3,072 pixel bytes (R, G, B planes of 32x32), read by MindSpore's
  `Cifar10Dataset`. The folder may be the `cifar-10-batches-bin` folder itself or the one holding it.
- A folder of images with one subfolder per class, named as in `CLASSES` (as CIFAR-10 exported to
  PNGs usually is), optionally under `train/` and `test/`; read by `ImageFolderDataset`.

Every file is checked before a worker starts: a missing or truncated one is one line naming it.
"""
from __future__ import annotations

from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision
import numpy as np

from ddpm_ms.data.errors import DataError
from ddpm_ms.data.paths import fetch_command, resolve
from ddpm_ms.data.transforms import finish, shard
from ddpm_ms.registry import DATASETS, Dataset, Download

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 32 * 32 * 3
RECORDS_PER_FILE = 10_000  # Cifar10Dataset reads every file as this many records
BIN_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
BIN_FOLDER = "cifar-10-batches-bin"


def binary_folder(root: Path) -> Path | None:
    """The folder holding the .bin files under `root` (root itself or root/cifar-10-batches-bin), or None."""
    for folder in (root, root / BIN_FOLDER):
        if folder.is_dir() and any(folder.glob("*_batch*.bin")):
            return folder
    return None


def class_folder(root: Path, split: str) -> Path | None:
    """The folder of per-class image folders for `split` (root/split, else root), or None."""
    for folder in (root / split, root):
        if folder.is_dir() and any((folder / name).is_dir() for name in CLASSES):
            return folder
    return None


def check_binary(folder: Path, split: str) -> list[Path]:
    """The split's .bin files, each checked to hold whole 10,000-record blocks; a DataError otherwise."""
    names = BIN_FILES[split]
    present = [folder / n for n in names if (folder / n).is_file()]
    if not present:
        raise DataError(f"cifar10: no {' / '.join(names)} in {folder}; get the binary archive with "
                     f"`{fetch_command('cifar10', folder.parent if folder.name == BIN_FOLDER else folder)}`")
    for path in present:
        size = path.stat().st_size
        if size != RECORDS_PER_FILE * RECORD_BYTES:
            raise DataError(f"{path} holds {size} bytes, not the {RECORDS_PER_FILE} records of {RECORD_BYTES} bytes "
                         f"({RECORDS_PER_FILE * RECORD_BYTES} bytes) of the CIFAR-10 binary version: the file is cut "
                         "short or another format (the Python pickles are not read); download it again")
    return present


def cifar10_source(root: Path, split: str = "train", shuffle: bool = True, num_shards=None, shard_id=None):
    """Unbatched dataset of CIFAR-10 from `root`: columns "image" (32, 32, 3) uint8 and "label" int32."""
    root = Path(root)
    folder = binary_folder(root)
    if folder is not None:
        check_binary(folder, split)
        dataset = ds.Cifar10Dataset(str(folder), usage=split, shuffle=shuffle, **shard(num_shards, shard_id))
    else:
        folder = class_folder(root, split)
        if folder is None:
            raise DataError(f"cifar10: {root} holds neither the binary archive's .bin files (nor {BIN_FOLDER}/) nor a "
                         f"folder per class ({', '.join(CLASSES)}); get the archive with "
                         f"`{fetch_command('cifar10', root)}` or pass {{folder_flag}} DIR pointing at it")
        dataset = ds.ImageFolderDataset(str(folder), shuffle=shuffle, decode=True,
                                        class_indexing={name: i for i, name in enumerate(CLASSES)},
                                        **shard(num_shards, shard_id))
        dataset = dataset.map([vision.Resize((32, 32))], input_columns=["image"])  # CIFAR's size, whatever was saved
    return dataset.map(transforms.TypeCast(ms.int32), input_columns=["label"])


def split_files(root, split: str) -> list[Path] | None:
    """The .bin files of `split` under `root` (checked), or None when `root` holds a folder per class."""
    folder = binary_folder(Path(root))
    return check_binary(folder, split) if folder is not None else None


def load_arrays(root, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Every image of `split` as uint8 (N, 3, 32, 32) and its label (N,) int64, in file order (FID's
    reference and floor)."""
    files = split_files(root, split)
    if files is not None:
        raw = np.concatenate([np.fromfile(f, np.uint8).reshape(-1, RECORD_BYTES) for f in files])
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)
    images, labels = [], []
    for image, label in cifar10_source(Path(root), split, shuffle=False).create_tuple_iterator(output_numpy=True):
        images.append(image.transpose(2, 0, 1))
        labels.append(int(label))
    return np.stack(images), np.asarray(labels, np.int64)


def cifar10_dataset(root=None, batch_size=128, split="train", shuffle=True, random_flip=True, num_workers=2,
                    with_labels=False, pad=0, num_shards=None, shard_id=None):
    """Batched pipeline over CIFAR-10 (the binary archive or a folder per class); columns "image"
    (3, 32, 32) in [-1, 1] (and "label")."""
    root, _ = resolve("cifar10", root)
    dataset = cifar10_source(root, split, shuffle, num_shards, shard_id)
    if dataset.get_dataset_size() < batch_size:
        raise DataError(f"cifar10 {split} in {root} has {dataset.get_dataset_size()} images, fewer than one batch "
                        f"of {batch_size}")
    return finish(dataset, batch_size, random_flip, num_workers, ["image", "label"] if with_labels else ["image"], 3,
                  pad)


def _load(data, image_shape, batch_size, split="train", shuffle=True, with_labels=False, num_shards=None,
          shard_id=None):
    return cifar10_dataset(data.root, batch_size, split, shuffle=shuffle, random_flip=data.random_flip,
                           num_workers=data.num_workers, with_labels=with_labels, pad=int(data.pad),
                           num_shards=num_shards, shard_id=shard_id)


DATASETS.register(Dataset(
    "cifar10", _load, "cifar10", image_shape=(3, 32, 32), class_names=CLASSES,
    load_split=lambda root, split: load_arrays(resolve("cifar10", root)[0], split),
    split_files=lambda root, split: split_files(resolve("cifar10", root)[0], split),
    download=Download(archive="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                      archive_md5="c32a1d4ab5d03f1284b67883e8d87530", archive_folder=BIN_FOLDER),
    classifier="cifar10_classifier.ckpt"))
