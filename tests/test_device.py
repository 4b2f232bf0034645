"""The device seam: CPU picks the C++ kernels when they build, and says why when it falls back."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import warnings
warnings.simplefilter("always")
from ddpm_ms.device import select_device, kernel_formulation
select_device("CPU")
print("formulation", kernel_formulation())
"""


def _probe(env_extra):
    import os
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)


def test_unwritable_kernel_cache_falls_back_to_mindspore_ops_with_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _probe({"DDPM_MS_KERNEL_CACHE": str(blocker / "cache"), "DDPM_MS_KERNELS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "formulation im2col" in proc.stdout
    assert "fast CPU kernels unavailable" in proc.stderr and "DDPM_MS_KERNEL_CACHE" in proc.stderr


def test_environment_forces_a_formulation():
    proc = _probe({"DDPM_MS_KERNELS": "native"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "formulation native" in proc.stdout
