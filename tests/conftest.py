import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ddpm_ms  # noqa: F401  (quiets MindSpore's plugin warnings before it is imported)
from ddpm_ms.device import select_device

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    select_device("CPU")
    # Cached test-set features go to a throw-away folder, not the user's ~/.cache.
    os.environ.setdefault("DDPM_MS_CACHE", tempfile.mkdtemp(prefix="ddpm_ms-test-cache-"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mnist_dir():
    path = Path(os.environ.get("DDPM_MS_MNIST", SHARED_DATA / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST IDX files not found in {path} (set DDPM_MS_MNIST to a folder that holds them)")
    return path
