"""Where the data sets live: the default data root, and each data set's folder under it.

The default data root is `$DDPM_MS_DATA` when it is set, else the `data/` folder of the checkout
when the package runs from one (the embedded copies). An installed package has no such folder:
there the data comes from `--data DIR` (or `$DDPM_MS_DATA`), and a command that needs the default
says where it looked and what to pass.
"""
from __future__ import annotations

import os
from pathlib import Path

from ddpm_ms.data.errors import DataError
from ddpm_ms.registry import DATASETS

DATA_ENV = "DDPM_MS_DATA"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT = PACKAGE_DIR.parent
REPO_DATA = CHECKOUT / "data"  # the embedded copies; exists only in a checkout


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


def fetch_command(name: str, to) -> str:
    """The command that downloads data set `name` into `to`."""
    return f"python -m ddpm_ms.data.download {name} --to {to}"


def default_root(name: str) -> Path:
    """The default folder of data set `name`: its folder under the data root; a DataError saying where
    it looked and what to pass when there is no data root."""
    entry = DATASETS[name]
    root = data_root()
    if root is None:
        what = "your images" if entry.download is None else "its files"
        raise DataError(
            f"{name}: no data folder given and no default one: {DATA_ENV} is not set and ddpm_ms runs from an "
            f"installed package ({PACKAGE_DIR}), not from a checkout with a data/ folder (looked for {REPO_DATA}); "
            f"pass {DataError.FOLDER_FLAG} DIR with a folder that holds {what}, or set {DATA_ENV} to a folder "
            f"that holds {entry.folder}/"
            + ("" if entry.download is None else f" (get the files with `{fetch_command(name, 'DIR')}`)"))
    return root / entry.folder


def resolve(name: str, root=None) -> tuple[Path, str]:
    """(the folder of data set `name`: `root` or its default, a note for messages saying where a default
    came from and how to choose another; "" for a given root)."""
    if root is not None:
        return Path(root), ""
    folder = DATASETS[name].folder
    if os.environ.get(DATA_ENV):
        note = f" (the default: {folder}/ under {DATA_ENV}={os.environ[DATA_ENV]})"
    else:
        note = f" (the checkout's embedded copy; {DATA_ENV} names another folder that holds {folder}/)"
    return default_root(name), note
