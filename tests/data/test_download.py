"""The download helper, pointed at local file:// copies (tests never touch the network)."""
from pathlib import Path

import pytest

from ddpm_ms.data import download as dl
from ddpm_ms.data import default_root
from ddpm_ms.registry import DATASETS, Download


def test_downloads_and_verifies_md5(tmp_path):
    source = default_root("fashion_mnist")
    files = DATASETS["fashion_mnist"].download.files
    mirrors = Download(urls=("file:///nonexistent-mirror/", source.as_uri() + "/"), files=files)
    got = dl.download("fashion_mnist", tmp_path / "fm", d=mirrors)
    assert sorted(p.name for p in got) == sorted(files)
    for p in got:
        assert dl.md5(p) == files[p.name]
    assert not list((tmp_path / "fm").glob(".*"))  # no partial files left


def test_bad_checksum_leaves_nothing_behind(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = DATASETS["mnist"].download.files
    for name in files:
        (mirror / name).write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match="md5"):
        dl.download("mnist", tmp_path / "out", d=Download(urls=(mirror.as_uri() + "/",), files=files))
    assert not any((tmp_path / "out").iterdir())


# The published files: Fashion-MNIST's md5s from zalandoresearch/fashion-mnist's README, MNIST's as torchvision
# lists them. Written out here, not read from the code, so a wrong host or checksum in the registry fails.
PUBLISHED = {
    "fashion_mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"], {
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


def test_official_urls_are_the_official_hosts_with_the_published_md5s():
    for name, (urls, files) in PUBLISHED.items():
        d = DATASETS[name].download
        assert (list(d.urls), dict(d.files)) == (urls, files), name
    # The embedded Fashion-MNIST copy is the published release: its bytes hash to those md5s.
    embedded = Path(__file__).resolve().parents[2] / "data" / "fashion-mnist"
    for name, md5 in PUBLISHED["fashion_mnist"][1].items():
        assert dl.md5(embedded / name) == md5, name


def test_a_data_set_downloads_by_its_name_or_its_folder_name():
    assert dl.spec("fashion-mnist") is dl.spec("fashion_mnist") is DATASETS["fashion_mnist"].download
    with pytest.raises(ValueError, match="no download for 'image_folder'"):
        dl.spec("image_folder")
