"""The extension points: samplers, backbones and data sets, each a registry of entries by name.

A new sampler, backbone or data set is one module that registers itself:

    from ddpm_ms.registry import SAMPLERS, Sampler
    SAMPLERS.register(Sampler("euler", EulerScheduler, title="Euler"))

Every list the library shows or checks (command-line choices, config validation, the pipeline
format, the demo's menus, the metrics' image shapes, the tests' backbones) reads these registries.
A registry imports every module of its package the first time it is read, so the built-in entries
(and any module dropped into that package) are there without a hand-kept list; a program or test
may register more at any time.

This module imports nothing heavy, so `ddpm_ms.config` can validate names against it.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping


class UnknownName(ValueError):
    """A name that no entry of a registry has."""


class Registry(Mapping):
    """name -> entry (any object with a `name`), in registration order. `package`: the package whose
    modules register the built-in entries, imported on first read."""

    def __init__(self, kind: str, package: str, check: Callable | None = None):
        self.kind, self.package, self._check = kind, package, check
        self._entries: dict = {}
        self._discovered = False

    def register(self, entry):
        """Add `entry` under `entry.name` (a name already taken is an error); returns the entry."""
        if self._check is not None:
            self._check(entry)
        if entry.name in self._entries and self._entries[entry.name] is not entry:
            raise ValueError(f"a {self.kind} named {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy one take it out again)."""
        self._entries.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def __getitem__(self, name: str):
        self._discover()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def __contains__(self, name) -> bool:
        self._discover()
        return name in self._entries

    def names(self) -> tuple:
        """The registered names, in registration order (the built-in ones first)."""
        return tuple(self)

    def check(self, name, what: str) -> None:
        """A ValueError naming `what` (e.g. "sampling.sampler") unless `name` is registered."""
        if name not in self:
            raise ValueError(f"{what} must be one of {self.names()}, got {name!r}")


@dataclass(frozen=True)
class Sampler:
    """A sampler by its command-line name. scheduler: the Scheduler class (diffusers-shaped; its class
    name is what a pipeline directory's scheduler_config.json records); title: its name for people
    ("DPM-Solver++ 2M"); fixed: constructor arguments that make this sampler of the class
    ({"algorithm_type": "sde-dpmsolver++"}); options: the constructor arguments a user may set beyond
    the ones every scheduler takes (prediction_type, clip_sample, timestep_spacing)."""
    name: str
    scheduler: type
    title: str
    fixed: Mapping = field(default_factory=dict)
    options: tuple = ()


@dataclass(frozen=True)
class Backbone:
    """A denoiser by its `model.arch` name: model, the nn.Cell class built as model(config); config,
    its ModelConfig subclass (fields, defaults and validation beside the model; its `flags`,
    {"--flag": (field, help)}, are the command-line flags that size it); title: its name for people;
    tiny: the fields of a small instance (a few thousand parameters), for tests and smoke runs."""
    name: str
    model: type
    config: type
    title: str = ""
    tiny: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Download:
    """Where a data set's official files are: urls, base addresses tried in order, with files
    {name: md5}; or archive, one URL with its md5 and the folder inside it whose files are kept."""
    urls: tuple = ()
    files: Mapping = field(default_factory=dict)
    archive: str | None = None
    archive_md5: str | None = None
    archive_folder: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A data set by its `data.dataset` name.

    load(data_config, image_shape, batch_size, split="train", shuffle=True, with_labels=False,
        num_shards=None, shard_id=None): a batched `mindspore.dataset` pipeline of `split`, columns
        "image" (float32 (C, H, W) in [-1, 1], `image_shape` plus data_config.pad) and, with_labels,
        "label"; data_config (ddpm_ms.config.DataConfig) gives root, flips, workers, strictness, pad;
    folder: its folder under the data root; image_shape: (C, H, W) of its images, None when any size
        is resized to the model's; class_names: a tuple, or a function of the data folder (for data
        whose classes are its sub-folders), or () for unlabelled data;
    load_split(root, split): (uint8 images (N, C, H, W), int64 labels) of "train" or "test", for the
        metrics' reference statistics (None: FID is not measured here); split_files(root, split): the
        files those come from (their digests key the cached statistics; None: not cached);
    download: its official files (None: the user brings them); classifier: file name of its FID
        classifier's weights in ddpm_ms/metrics/weights (None: FID is not measured here);
    class_words: per class, (names that train the text-image model, held-out names) for prompts;
    flips: whether a mirrored image is still one of the data set's (photos: yes; digits, shoes that all
        face one way: no), the default of random flips for its classifier."""
    name: str
    load: Callable
    folder: str
    image_shape: tuple | None = None
    class_names: tuple | Callable = ()
    load_split: Callable | None = None
    split_files: Callable | None = None
    download: Download | None = None
    classifier: str | None = None
    class_words: tuple = ()
    flips: bool = True

    def classes(self, root=None) -> tuple:
        """The class names, read from the data at `root` when the entry reads them from there."""
        return tuple(self.class_names(root) if callable(self.class_names) else self.class_names)


def _check_backbone(entry: Backbone) -> None:
    """A backbone declares the names of the parameters that fine-tuning across label sets rewrites
    (ddpm_ms.checkpoint.adapt_label_embedding): its label table and the time embedding's output bias."""
    for attr in ("label_table", "time_bias"):
        if not isinstance(getattr(entry.model, attr, None), str):
            raise TypeError(f"backbone {entry.name!r}: {entry.model.__name__} must declare `{attr}`, the name of "
                            "that parameter (see ddpm_ms.models.unet.UNet)")
    if getattr(entry.config, "arch", None) != entry.name:
        raise TypeError(f"backbone {entry.name!r}: its config class {entry.config.__name__} must default arch to "
                        f"{entry.name!r}")


SAMPLERS = Registry("sampler", "ddpm_ms.sampling")
BACKBONES = Registry("backbone", "ddpm_ms.models", check=_check_backbone)
DATASETS = Registry("data set", "ddpm_ms.data")

__all__ = ["BACKBONES", "DATASETS", "SAMPLERS", "Backbone", "Dataset", "Download", "Registry", "Sampler",
           "UnknownName"]
