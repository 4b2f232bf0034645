"""Data pipelines (mindspore.dataset), the default data root ($DDPM_MS_DATA or the checkout's data/) and downloads."""
from ddpm_ms.data.datasets import (CLASS_NAMES, DataError, build_dataset, cifar10_dataset, idx_dataset,
                                   image_folder_dataset,
                                   load_idx_dataset, read_idx, scan_image_folder)
from ddpm_ms.data.paths import DATA_ENV, data_root

__all__ = ["CLASS_NAMES", "DATA_ENV", "DataError", "build_dataset", "cifar10_dataset", "data_root", "idx_dataset", "image_folder_dataset",
           "load_idx_dataset", "read_idx", "scan_image_folder"]
