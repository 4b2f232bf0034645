"""Data pipelines (mindspore.dataset), embedded data locations and downloads."""
from ddpm_ms.data.datasets import (CLASS_NAMES, DataError, build_dataset, idx_dataset, image_folder_dataset,
                                   load_idx_dataset, read_idx, scan_image_folder)

__all__ = ["CLASS_NAMES", "DataError", "build_dataset", "idx_dataset", "image_folder_dataset", "load_idx_dataset",
           "read_idx", "scan_image_folder"]
