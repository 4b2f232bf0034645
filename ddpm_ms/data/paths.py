"""Where the data sets live: the default data root and the official files of the IDX data sets.

The default data root is `$DDPM_MS_DATA` when it is set, else the `data/` folder of the checkout
when the package runs from one (the embedded copies). An installed package has no such folder:
there the data comes from `--data DIR` (or `$DDPM_MS_DATA`), and a command that needs the default
says where it looked and what to pass.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DATA_ENV = "DDPM_MS_DATA"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT = PACKAGE_DIR.parent
REPO_DATA = CHECKOUT / "data"  # the embedded copies; exists only in a checkout
# What each data set's folder under the data root is called.
FOLDERS = {"fashion_mnist": "fashion-mnist", "mnist": "mnist", "cifar10": "cifar10", "image_folder": "cats"}

# name -> (base URLs tried in order: the official site first, then its usual mirror, {file: md5})
OFFICIAL = {
    "fashion-mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"], {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "mnist": (["http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"], {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
}
# name -> (archive URL, its md5, the folder inside it whose files are kept): data sets that come as one archive.
ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                "cifar-10-batches-bin"),
}


def running_from_checkout() -> bool:
    """True when ddpm_ms is imported from a source checkout (pyproject.toml and data/ beside the package),
    False for an installed copy in site-packages."""
    return (CHECKOUT / "pyproject.toml").is_file() and REPO_DATA.is_dir()


def data_root() -> Path | None:
    """The default data root: $DDPM_MS_DATA, else the checkout's data/ folder, else None (installed package)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_DATA if running_from_checkout() else None


def default_root(name: str) -> Path:
    """The default folder of data set `name` ("fashion_mnist", "mnist", "image_folder"): a DataError
    saying where it looked and what to pass when there is no data root."""
    root = data_root()
    if root is None:
        from ddpm_ms.data.datasets import DataError  # datasets imports this module

        what = {"image_folder": "your images", "cifar10": "its binary archive"}.get(name, "its IDX files")
        raise DataError(
            f"{name}: no data folder given and no default one: {DATA_ENV} is not set and ddpm_ms runs from an "
            f"installed package ({PACKAGE_DIR}), not from a checkout with a data/ folder (looked for {REPO_DATA}); "
            f"pass {DataError.FOLDER_FLAG} DIR with a folder that holds {what}, or set {DATA_ENV} to a folder "
            f"that holds {FOLDERS[name]}/"
            + ("" if name == "image_folder" else
               f" (get the files with `python -m ddpm_ms.data.download {FOLDERS[name]} --to DIR`)"))
    return root / FOLDERS[name]


class _DefaultRoots(Mapping):
    """name -> default folder, resolved when read (so $DDPM_MS_DATA set after import counts)."""

    def __getitem__(self, name: str) -> Path:
        if name not in FOLDERS:
            raise KeyError(name)
        return default_root(name)

    def __iter__(self):
        return iter(FOLDERS)

    def __len__(self) -> int:
        return len(FOLDERS)


DEFAULT_ROOTS = _DefaultRoots()
