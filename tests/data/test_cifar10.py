"""CIFAR-10: the binary archive through Cifar10Dataset, a folder per class, sharding, bad files, and
the download of the archive (from a file:// copy the test writes; the network is never used)."""
import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from cifar_files import COLOURS, cifar_images, write_cifar10
from ddpm_ms.presets import preset
from ddpm_ms.data import DataError, build_dataset, cifar10_dataset
from ddpm_ms.data import download as dl
from ddpm_ms.data.cifar10 import CLASSES
from ddpm_ms.registry import DATASETS, Download


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root)


def test_binary_archive_images_labels_and_plane_order(cifar_root):
    root, written = cifar_root
    labels, images = written["data_batch_1.bin"]
    data = cifar10_dataset(root, batch_size=16, shuffle=False, random_flip=False, with_labels=True)
    assert data.get_dataset_size() == 10_000 // 16
    x, y = next(data.create_tuple_iterator(output_numpy=True))
    assert x.shape == (16, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, labels[:16])
    np.testing.assert_allclose(x, images[:16].astype(np.float32) / 127.5 - 1, atol=1e-6)  # R, G, B planes in order


def test_test_split_and_the_batches_folder_itself(cifar_root):
    root, written = cifar_root
    data = cifar10_dataset(root / "cifar-10-batches-bin", batch_size=10, split="test", shuffle=False,
                           random_flip=False, with_labels=True)
    _, y = next(data.create_tuple_iterator(output_numpy=True))
    np.testing.assert_array_equal(y, written["test_batch.bin"][0][:10])


def test_flips_mirror_some_images(cifar_root):
    root, written = cifar_root
    images = written["data_batch_1.bin"][1][:64].astype(np.float32) / 127.5 - 1
    import mindspore.dataset as ds
    ds.config.set_seed(0)
    x = next(cifar10_dataset(root, batch_size=64, shuffle=False, random_flip=True).create_tuple_iterator(
        output_numpy=True))[0]
    same = np.isclose(x, images, atol=1e-6).all(axis=(1, 2, 3))
    mirrored = np.isclose(x, images[..., ::-1], atol=1e-6).all(axis=(1, 2, 3))
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54


def test_two_shards_split_the_data_between_them(cifar_root):
    root, _ = cifar_root
    seen = []
    for shard in (0, 1):
        data = cifar10_dataset(root, batch_size=50, shuffle=False, random_flip=False, num_shards=2, shard_id=shard)
        assert data.get_dataset_size() == 5_000 // 50
        seen.append(np.concatenate([x.reshape(len(x), -1) for (x,) in data.create_tuple_iterator(output_numpy=True)]))
    assert len(seen[0]) == len(seen[1]) == 5_000
    together = np.unique(np.concatenate(seen), axis=0)
    assert len(together) == 10_000  # disjoint, and every image once


def test_folder_per_class(tmp_path):
    rng = np.random.default_rng(1)
    for k in (0, 3, 9):
        folder = tmp_path / "train" / CLASSES[k]
        folder.mkdir(parents=True)
        for i, image in enumerate(cifar_images(np.full(4, k), rng)):
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")
    data = cifar10_dataset(tmp_path, batch_size=12, shuffle=False, random_flip=False, with_labels=True)
    x, y = next(data.create_tuple_iterator(output_numpy=True))
    assert sorted(y.tolist()) == [0] * 4 + [3] * 4 + [9] * 4
    means = (x.mean(axis=(2, 3)) + 1) * 127.5
    np.testing.assert_allclose(means, COLOURS[y], atol=4)


def test_preset_pipeline_and_wrong_model_shape(cifar_root):
    root, _ = cifar_root
    cfg = preset("cifar10_cond")
    cfg.data.root = str(root)
    data = build_dataset(cfg.data, cfg.model, batch_size=8)
    assert [tuple(s) for s in data.output_shapes()] == [(8, 3, 32, 32), (8,)]
    cfg.model.channels = 1
    with pytest.raises(ValueError, match="32x32 RGB"):
        build_dataset(cfg.data, cfg.model, batch_size=8)


def test_truncated_or_missing_files_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    with pytest.raises(DataError, match="download cifar10"):
        cifar10_dataset(tmp_path / "nothing-here")
    (folder / "data_batch_1.bin").write_bytes(b"\0" * 3073 * 10)
    with pytest.raises(DataError, match=r"data_batch_1\.bin holds 30730 bytes.*download it again"):
        cifar10_dataset(tmp_path)
    with pytest.raises(DataError, match=r"no test_batch\.bin in .*download cifar10"):
        cifar10_dataset(tmp_path, split="test")


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_the_archive_and_extracts_only_its_batches(tmp_path, monkeypatch):
    served = tmp_path / "served" / "cifar-10-binary.tar.gz"
    served.parent.mkdir()
    md5 = _archive(served, {"cifar-10-batches-bin/data_batch_1.bin": b"abc", "cifar-10-batches-bin/test_batch.bin": b"d",
                            "../escape.bin": b"x", "other/file.bin": b"y"})
    out = tmp_path / "out"
    files = dl.download("cifar10", out, d=Download(archive=served.as_uri(), archive_md5=md5,
                                                   archive_folder="cifar-10-batches-bin"))
    assert sorted(p.name for p in files) == ["data_batch_1.bin", "test_batch.bin"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "out/cifar-10-batches-bin/data_batch_1.bin", "out/cifar-10-batches-bin/test_batch.bin",
        "served/cifar-10-binary.tar.gz"]  # the archive deleted, nothing written outside the folder


def test_download_with_a_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    served = tmp_path / "cifar-10-binary.tar.gz"
    _archive(served, {"cifar-10-batches-bin/data_batch_1.bin": b"abc"})
    with pytest.raises(RuntimeError, match="md5"):
        dl.download("cifar10", tmp_path / "out", d=Download(archive=served.as_uri(), archive_md5="0" * 32,
                                                           archive_folder="cifar-10-batches-bin"))
    assert not any((tmp_path / "out").iterdir())


def test_the_official_archive_and_its_published_md5():
    # from https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 binary version (suitable for C programs)")
    d = DATASETS["cifar10"].download
    assert (d.archive, d.archive_md5, d.archive_folder) == ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                                                            "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin")
