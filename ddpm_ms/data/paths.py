"""Where the data sets live: the embedded copies under <repo>/data and their official files."""
from __future__ import annotations

from pathlib import Path

REPO_DATA = Path(__file__).resolve().parents[2] / "data"

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

DEFAULT_ROOTS = {
    "fashion_mnist": REPO_DATA / "fashion-mnist",
    "mnist": REPO_DATA / "mnist",
    "image_folder": REPO_DATA / "cats",
}
