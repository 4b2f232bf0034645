"""The steps every training pipeline ends with: pad, flip, scale to [-1, 1], CHW, batch, shard."""
from __future__ import annotations

import mindspore.dataset.vision as vision


def to_model_range(channels: int) -> list:
    """uint8 HWC -> float32 CHW in [-1, 1] ((x - 127.5) / 127.5 maps 0 and 255 exactly to -1 and 1)."""
    return [vision.Normalize(mean=[127.5] * channels, std=[127.5] * channels), vision.HWC2CHW()]


def finish(dataset, batch_size: int, random_flip: bool, num_workers: int, columns: list, channels: int, pad: int = 0):
    """`dataset`'s uint8 HWC "image" column padded by `pad` black pixels on every side, flipped at
    random (when asked), scaled to [-1, 1] as CHW, in batches (the last partial one dropped), with `columns` kept."""
    ops_list = (([vision.Pad(int(pad))] if pad else []) + ([vision.RandomHorizontalFlip()] if random_flip else [])
                + to_model_range(channels))
    dataset = dataset.map(operations=ops_list, input_columns=["image"], num_parallel_workers=num_workers)
    return dataset.batch(batch_size, drop_remainder=True).project(columns)


def shard(num_shards, shard_id) -> dict:
    """A source's sharding arguments: this rank's share of each epoch (data-parallel training), or none."""
    return {"num_shards": num_shards, "shard_id": shard_id} if num_shards else {}
