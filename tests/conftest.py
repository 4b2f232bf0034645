import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ddpm_ms  # noqa: F401  (quiets MindSpore's plugin warnings before it is imported)
from ddpm_ms.device import select_device

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The longest files (pytest --durations on the 2-core CPU: 70-280 s each), handed to the xdist
# workers first so that the workers finish together instead of one waiting on a late long file.
LONGEST_FIRST = ("test_notebook.py", "training/test_resume.py", "training/test_trainer.py", "cli/test_bench.py",
                 "training/test_kill_safety.py", "training/test_step.py")


def pytest_configure(config):
    select_device("CPU")
    # Cached test-set features go to a throw-away folder, not the user's ~/.cache.
    os.environ.setdefault("DDPM_MS_CACHE", tempfile.mkdtemp(prefix="ddpm_ms-test-cache-"))


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file and among the rest is unchanged


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mnist_dir():
    path = Path(os.environ.get("DDPM_MS_MNIST", SHARED_DATA / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST IDX files not found in {path} (set DDPM_MS_MNIST to a folder that holds them)")
    return path
