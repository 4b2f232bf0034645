"""Download Fashion-MNIST, MNIST or CIFAR-10 from the official sites and verify their md5s.

    python -m ddpm_ms.data.download fashion-mnist --to data/fashion-mnist   # a data set's name or folder
    python -m ddpm_ms.data.download mnist --to data/mnist
    python -m ddpm_ms.data.download cifar10 --to data/cifar10

A file is written under a temporary name and moved into place only once its md5 matches. CIFAR-10
is the binary version (162 MB): its archive is checked, then only the regular files of its
cifar-10-batches-bin/ folder are extracted (no other path in the archive is written), and the
archive is deleted. Never used by the tests, which write their own files.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

from ddpm_ms.registry import DATASETS, Download


def downloadable() -> dict:
    """{name: Download} of the registered data sets that have official files."""
    return {name: DATASETS[name].download for name in DATASETS if DATASETS[name].download is not None}


def spec(name: str) -> Download:
    """The download of data set `name`, also by its folder's name ("fashion-mnist")."""
    specs = downloadable()
    by_folder = {DATASETS[n].folder: n for n in specs}
    if name not in specs and name not in by_folder:
        raise ValueError(f"no download for {name!r}; choose one of {', '.join(specs)}")
    return specs[by_folder.get(name, name)]


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, expected_md5: str, timeout: float = 60.0) -> Path:
    """`url` into `dest`, through a temporary file moved into place once its md5 is `expected_md5`."""
    tmp = dest.with_name(f".{dest.name}.part")
    print(f"fetching {url}")
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
    got = md5(tmp)
    if got != expected_md5:
        tmp.unlink()
        raise RuntimeError(f"{dest.name}: md5 {got} does not match the published {expected_md5}; try again later")
    os.replace(tmp, dest)
    return dest


def extract_folder(archive: Path, folder: str, to: Path) -> list[Path]:
    """The regular files directly inside `folder` of the tar `archive`, written to to/folder/ (each
    atomically); every other member, and any path that would leave to/folder/, is ignored."""
    out_dir = to / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            parent, _, fname = member.name.rpartition("/")
            if not member.isfile() or parent.strip("./") != folder or not fname or fname.startswith("."):
                continue
            dest, tmp = out_dir / fname, out_dir / f".{fname}.part"
            with tar.extractfile(member) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
            done.append(dest)
    return done


def download_archive(d: Download, to: Path, timeout: float = 60.0) -> list[Path]:
    to.mkdir(parents=True, exist_ok=True)
    archive = to / d.archive.rsplit("/", 1)[1]
    if not (archive.is_file() and md5(archive) == d.archive_md5):
        fetch(d.archive, archive, d.archive_md5, timeout)
    files = extract_folder(archive, d.archive_folder, to)
    archive.unlink()
    print(f"{len(files)} files in {to / d.archive_folder}")
    return files


def download(name: str, to: Path, timeout: float = 60.0, d: Download | None = None) -> list[Path]:
    """Data set `name`'s official files into `to` (d: another Download to fetch instead, for tests)."""
    d = d or spec(name)
    if d.archive:
        return download_archive(d, to, timeout)
    to.mkdir(parents=True, exist_ok=True)
    done = []
    for fname, expected in d.files.items():
        dest = to / fname
        if dest.is_file() and md5(dest) == expected:
            print(f"{dest} present, md5 ok")
            done.append(dest)
            continue
        tmp = to / f".{fname}.part"
        for i, base in enumerate(d.urls):
            print(f"fetching {base}{fname}")
            try:
                with urllib.request.urlopen(base + fname, timeout=timeout) as resp, open(tmp, "wb") as out:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                break
            except OSError as e:
                if i == len(d.urls) - 1:
                    raise
                print(f"  {e}; trying the next mirror")
        got = md5(tmp)
        if got != expected:
            tmp.unlink()
            raise RuntimeError(f"{fname}: md5 {got} does not match the published {expected}; try again later")
        os.replace(tmp, dest)
        done.append(dest)
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = list(downloadable())
    p.add_argument("name", choices=names + [DATASETS[n].folder for n in names if DATASETS[n].folder not in names],
                   help="the data set (or its folder's name)")
    p.add_argument("--to", type=Path, required=True,
                   help="directory to write the files to (the four .gz files; cifar10: cifar-10-batches-bin/)")
    args = p.parse_args(argv)
    try:
        download(args.name, args.to)
    except (OSError, RuntimeError, tarfile.TarError) as e:
        print(f"download failed: {e}. Check your internet connection, or copy the files by hand.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
