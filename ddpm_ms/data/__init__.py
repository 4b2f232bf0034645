"""Data pipelines (mindspore.dataset), one module per kind of data, each registering its data sets in
ddpm_ms.registry.DATASETS; the default data root ($DDPM_MS_DATA or the checkout's data/) and downloads."""
# The order of these imports is the order the data sets register in, and so the order menus list them.
from ddpm_ms.data.idx import idx_dataset, load_idx_dataset, read_idx  # isort: skip
from ddpm_ms.data.cifar10 import cifar10_dataset  # isort: skip
from ddpm_ms.data.image_folder import image_folder_dataset, scan_image_folder  # isort: skip
from ddpm_ms.data.datasets import build_dataset, class_names
from ddpm_ms.data.errors import DataError
from ddpm_ms.data.paths import DATA_ENV, data_root, default_root

__all__ = ["DATA_ENV", "DataError", "build_dataset", "cifar10_dataset", "class_names", "data_root", "default_root",
           "idx_dataset", "image_folder_dataset", "load_idx_dataset", "read_idx", "scan_image_folder"]
