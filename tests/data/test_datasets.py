"""Data pipelines on the embedded files, on MNIST from a given folder, and on broken input."""
import gzip
import warnings

import numpy as np
import pytest
from PIL import Image

from ddpm_ms.presets import preset
from ddpm_ms.data import (DataError, build_dataset, idx_dataset, image_folder_dataset, load_idx_dataset, read_idx,
                          scan_image_folder)
from ddpm_ms.data.paths import default_root


def first_batch(dataset):
    return next(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))


def test_embedded_fashion_mnist_counts_and_pixels():
    images, labels = load_idx_dataset("fashion_mnist")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    test_images, _ = load_idx_dataset("fashion_mnist", split="test")
    assert test_images.shape == (10000, 28, 28)
    assert images.max() == 255 and images.min() == 0


def test_fashion_mnist_pipeline_shape_range_dtype():
    ds = idx_dataset("fashion_mnist", batch_size=64, shuffle=False, random_flip=False, with_labels=True)
    assert ds.get_dataset_size() == 60000 // 64
    x, y = first_batch(ds)
    assert x.shape == (64, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() == -1.0
    raw, labels = load_idx_dataset("fashion_mnist")
    np.testing.assert_allclose(x[:, 0], raw[:64] / 127.5 - 1.0, atol=1e-6)  # unshuffled: same order
    np.testing.assert_array_equal(y, labels[:64])


def test_fashion_mnist_footwear_faces_one_way():
    """Why the IDX presets do not flip: a mirrored boot is not a Fashion-MNIST boot (the FID
    classifier calls 97% of mirrored test boots bags; research/fid_sensitivity.py)."""
    images, labels = load_idx_dataset("fashion_mnist")
    for label in (5, 7, 9):  # sandals, sneakers, ankle boots
        shoes = images[labels == label].astype(np.float64)
        left, right = shoes[:, :, :14].sum(axis=(1, 2)), shoes[:, :, 14:].sum(axis=(1, 2))
        assert np.mean(right > left) > 0.9, label


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_presets_train_on_unmirrored_images(name, request):
    cfg = preset(name)
    if name == "mnist":
        cfg.data.root = str(request.getfixturevalue("mnist_dir"))
    x, y = first_batch(build_dataset(cfg.data, cfg.model, 256, shuffle=False))  # class-conditional: labels too
    raw, labels = load_idx_dataset(name, cfg.data.root)
    np.testing.assert_allclose(x[:, 0], raw[:256] / 127.5 - 1.0, atol=1e-6)  # a flip would mirror about half
    np.testing.assert_array_equal(y, labels[:256])


def test_mnist_from_a_given_folder(mnist_dir):
    ds = idx_dataset("mnist", root=mnist_dir, batch_size=100, shuffle=True)
    assert ds.get_dataset_size() == 600
    (x,) = first_batch(ds)
    assert x.shape == (100, 1, 28, 28) and -1.0 <= x.min() and x.max() <= 1.0


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        idx_dataset("mnist", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "python -m ddpm_ms.data.download mnist" in msg
    assert "pass --data DIR" in msg  # train.py's flag, unless a command words it for its own
    reworded = e.value.for_flag("--data-root")
    assert "pass --data-root DIR" in reworded and "--data DIR" not in reworded
    assert reworded.replace("--data-root", "--data") == msg  # nothing else in the message changes


def test_truncated_idx_is_named(tmp_path):
    src = default_root("fashion_mnist") / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(src.read_bytes())
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable IDX"):
        read_idx(bad)


def _folder_with_a_corrupt_image(tmp_path):
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 60), (50, 50), (70, 45)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(tmp_path / "gray.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = tmp_path / "img0.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])
    (tmp_path / "notes.txt").write_text("not an image, ignored by extension")
    return tmp_path


def test_corrupt_images_are_named_and_skipped(tmp_path):
    folder = _folder_with_a_corrupt_image(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = scan_image_folder(folder)
    assert sorted(p.name for p in paths) == ["gray.jpg", "img0.png", "img1.png", "img2.png"]
    named = " ".join(str(w.message) for w in caught)
    assert "broken.jpg" in named and "truncated.png" in named
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = image_folder_dataset(folder, image_size=(16, 24), channels=3, batch_size=4, shuffle=False)
    (x,) = first_batch(ds)
    assert x.shape == (4, 3, 16, 24) and x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_strict_mode_makes_a_corrupt_image_an_error(tmp_path):
    folder = _folder_with_a_corrupt_image(tmp_path)
    with pytest.raises(DataError, match="broken.jpg"):
        scan_image_folder(folder, strict=True)


def test_grayscale_folder_and_the_embedded_cats():
    ds = image_folder_dataset(None, image_size=32, channels=1, batch_size=2, shuffle=False, random_flip=False)
    (x,) = first_batch(ds)
    assert x.shape == (2, 1, 32, 32)
    assert x.std() > 0.1  # real photos, not blank


def test_image_folder_scales_the_short_side_then_crops_the_centre(tmp_path):
    # 20 x 60: black | white | black thirds. Scaled to 16 x 48 and centre-cropped to 16 x 16, only the
    # white third is left; squashing the whole photo to 16 x 16 would keep the black bands.
    bands = np.zeros((20, 60, 3), np.uint8)
    bands[:, 20:40] = 255
    Image.fromarray(bands).save(tmp_path / "bands.png")
    ds = image_folder_dataset(tmp_path, image_size=16, channels=3, batch_size=1, shuffle=False, random_flip=False,
                              num_workers=1)
    (x,) = first_batch(ds)
    assert x.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(x[0, :, :, 2:14], 1.0, atol=0.05)  # inside: white ([-1, 1] scale)
    assert x.min() > 0.5, "no black band at the edges"


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan_image_folder(tmp_path)
