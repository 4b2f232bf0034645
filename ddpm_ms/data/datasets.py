"""The training pipeline a config asks for, from the data set registry (ddpm_ms.registry.DATASETS).

Each data set registers itself in its own module (idx.py: Fashion-MNIST and MNIST; cifar10.py;
image_folder.py); this module checks that the data and the model agree and asks the entry for
its `mindspore.dataset` pipeline of float32 images in [-1, 1], shaped (C, H, W).
"""
from __future__ import annotations

from ddpm_ms.registry import DATASETS


def class_names(dataset: str | None, root=None) -> tuple:
    """The class names of a registered data set (() for unlabelled or unknown data)."""
    return DATASETS[dataset].classes(root) if dataset in DATASETS else ()


def build_dataset(data_cfg, model_cfg, batch_size, shuffle=True, num_shards=None, shard_id=None):
    """The training pipeline a config asks for: columns "image", and "label" for a class-conditional
    model; with num_shards, shard `shard_id` of every epoch (batch_size is this shard's)."""
    entry = DATASETS[data_cfg.dataset]
    shape = (int(model_cfg.channels), *model_cfg.image_size)
    if entry.image_shape is not None:
        c, h, w = entry.image_shape
        pad = int(data_cfg.pad)
        if shape != (c, h + 2 * pad, w + 2 * pad):
            padded = f" padded by {pad} to {h + 2 * pad}x{w + 2 * pad}" if pad else ""
            raise ValueError(f"{entry.name} images are {h}x{w} {'grayscale' if c == 1 else 'RGB'}{padded}; the model "
                             f"is configured for {tuple(model_cfg.image_size)} with {model_cfg.channels} channels: "
                             f"start from a {entry.name} preset (data.pad 2 makes 28x28 images 32x32)")
    num_classes = int(model_cfg.num_classes)
    classes = entry.classes(data_cfg.root) if num_classes else ()
    if num_classes and num_classes < len(classes):
        raise ValueError(f"{entry.name} has {len(classes)} classes but the model is configured for "
                         f"num_classes={num_classes}: set it to {len(classes)} (or 0 for an unconditional model)")
    return entry.load(data_cfg, shape, batch_size, shuffle=shuffle, with_labels=bool(num_classes),
                      num_shards=num_shards, shard_id=shard_id)
