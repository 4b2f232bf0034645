"""CIFAR-10 in its binary format, written by the tests themselves (the real archive is never fetched).

Each file holds the format's 10,000 records: one label byte, then the red, green and blue planes of
a 32x32 image. Class k's images have the mean colour COLOURS[k] plus noise, so a classifier can learn
them and a wrong plane order or label shows."""
from pathlib import Path

import numpy as np

RECORDS = 10_000
COLOURS = np.array([[30 + 20 * k, 220 - 20 * k, 60 + (k % 3) * 60] for k in range(10)], np.float64)


def cifar_images(labels, rng) -> np.ndarray:
    """uint8 (N, 3, 32, 32): class colour plus noise of sd 20."""
    mean = COLOURS[labels][:, :, None, None]
    return np.clip(mean + rng.normal(0, 20, (len(labels), 3, 32, 32)), 0, 255).astype(np.uint8)


def write_batch(path: Path, rng, records: int = RECORDS):
    """One .bin file of `records` records; returns (labels, images (N, 3, 32, 32) uint8)."""
    labels = rng.integers(0, 10, records).astype(np.uint8)
    images = cifar_images(labels, rng)
    path.write_bytes(np.concatenate([labels[:, None], images.reshape(records, -1)], axis=1).tobytes())
    return labels, images


def write_cifar10(root: Path, seed: int = 0, train_files: int = 1) -> dict:
    """root/cifar-10-batches-bin/ with data_batch_1..train_files and test_batch; returns
    {file name: (labels, images)}."""
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}.bin" for i in range(1, train_files + 1)] + ["test_batch.bin"]
    return {name: write_batch(folder / name, rng) for name in names}
