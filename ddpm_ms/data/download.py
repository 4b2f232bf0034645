"""Download Fashion-MNIST or MNIST from the official mirrors and verify their md5s.

    python -m ddpm_ms.data.download fashion-mnist --to data/fashion-mnist
    python -m ddpm_ms.data.download mnist --to data/mnist

A file is written under a temporary name and moved into place only once its md5 matches.
Never used by the tests, which read local copies.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

from ddpm_ms.data.paths import OFFICIAL


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name: str, to: Path, timeout: float = 60.0) -> list[Path]:
    if name not in OFFICIAL:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(OFFICIAL)}")
    bases, files = OFFICIAL[name]
    to.mkdir(parents=True, exist_ok=True)
    done = []
    for fname, expected in files.items():
        dest = to / fname
        if dest.is_file() and md5(dest) == expected:
            print(f"{dest} present, md5 ok")
            done.append(dest)
            continue
        tmp = to / f".{fname}.part"
        for i, base in enumerate(bases):
            print(f"fetching {base}{fname}")
            try:
                with urllib.request.urlopen(base + fname, timeout=timeout) as resp, open(tmp, "wb") as out:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                break
            except OSError as e:
                if i == len(bases) - 1:
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
    p.add_argument("name", choices=sorted(OFFICIAL))
    p.add_argument("--to", type=Path, required=True, help="directory to write the four .gz files to")
    args = p.parse_args(argv)
    try:
        download(args.name, args.to)
    except OSError as e:
        print(f"download failed: {e}. Check your internet connection, or copy the files by hand.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
