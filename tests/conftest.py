import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ddpm_ms  # noqa: F401  (quiets MindSpore's plugin warnings before it is imported)
import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402
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


class GaussianOracle(nn.Cell):
    """The exact denoiser for data x0 ~ N(mu, s^2) per pixel. With ab = alpha-bar_t,
    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab); it answers in the
    parameterisation `prediction` (eps, x0 or v) so every scheduler conversion is exercised."""

    def __init__(self, schedule, mu, s, prediction="eps"):
        super().__init__()
        self.ab = schedule.tensor("alphas_cumprod")
        self.mu, self.var = float(mu), float(s) ** 2
        self.prediction = prediction

    def construct(self, x, t):
        ab = ops.gather(self.ab, t.astype(ms.int32), 0).reshape(-1, 1, 1, 1)
        a, s = ops.sqrt(ab), ops.sqrt(1 - ab)
        eps = s * (x - a * self.mu) / (ab * self.var + 1 - ab)
        if self.prediction == "eps":
            return eps
        x0 = (x - s * eps) / a
        if self.prediction == "x0":
            return x0
        return a * eps - s * x0


@pytest.fixture
def oracle():
    return GaussianOracle
