"""ddpm_ms: denoising diffusion models in MindSpore for Ascend, GPU and CPU."""
import os

# MindSpore prints every plugin it cannot load (Ascend, GPU) as a warning; keep errors only
# unless the user asked for more.
os.environ.setdefault("GLOG_v", "3")

__version__ = "0.1.0"
