"""Sampling from a user's image: image-to-image (SDEdit) and inpainting (RePaint).

Image-to-image (Meng et al. 2022, "SDEdit"): noise the image to the timestep that `strength` picks
on the sampler's grid and denoise from there, as diffusers' img2img pipelines do: of n steps, the
last int(n * strength) run. strength 1 is plain sampling (the image is not used), 0 returns the image.

Inpainting (Lugmayr et al. 2022, "RePaint"): after every step, to timestep t', the pixels to keep
are replaced by the image noised to t' (the image itself at the end), so the model fills the rest
in agreement with them. Resampling jumps help the two parts agree: after every `jump_length` steps
the chain goes back up `jump_length` steps by the forward process and comes down again, `jump_n_sample - 1`
times, which costs about `jump_n_sample` times the model calls.

`Img2Img` and `Inpaint` hold a task's inputs; the sampling loop (ddpm_ms/sampling/loop.py) takes one as `edit`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from PIL import Image

from ddpm_ms.images import in_mode, open_image
from ddpm_ms.sampling.loss_guidance import LUMA


class Img2Img:
    """Image-to-image: the chain starts from `image` noised to `strength` (0: the image unchanged,
    1: ignore it). image: (C, H, W) for every image or (N, C, H, W), in [-1, 1] (`read_image` reads
    files and PIL images)."""
    mask, jump_length, jump_n_sample = None, 1, 1  # no pixel kept, no resampling

    def __init__(self, image, strength: float = 0.8):
        if image is None:
            raise ValueError("image-to-image starts from an image: pass one")
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must be in [0, 1] (0: the image unchanged, 1: ignore it), got {strength}")
        self.image, self.strength = image, float(strength)

    def batched(self, num: int, shape) -> "Img2Img":
        """This edit for `num` images of `shape` (C, H, W): its image (and mask) as float32 (num, C, H, W), checked."""
        edit = copy.copy(self)
        edit.image = batch_images(self.image, num, shape, "image")
        if edit.image.shape[1] != shape[0]:
            raise ValueError(f"the image has {edit.image.shape[1]} channel(s); the model makes {shape[0]}")
        if self.mask is not None:
            edit.mask = batch_images(self.mask, num, shape, "mask")
        return edit

    def __getitem__(self, rows: slice) -> "Img2Img":
        """The edit of some images of a batched edit."""
        edit = copy.copy(self)
        edit.image = self.image[rows]
        if self.mask is not None:
            edit.mask = self.mask[rows]
        return edit


class Inpaint(Img2Img):
    """Inpainting: repaint where `mask` is 1 and keep `image` where it is 0 (1 or C channels, one for all
    images or one per image), with RePaint's resampling: jump_length steps back, jump_n_sample passes
    (1: none). strength < 1 also starts from the image, as Img2Img does."""

    def __init__(self, image, mask, strength: float = 1.0, jump_length: int = 1, jump_n_sample: int = 1):
        if image is None:
            raise ValueError("a mask says which pixels of an image to repaint: pass the image too")
        if mask is None:
            raise ValueError("inpainting repaints where the mask is 1: pass a mask (or use Img2Img)")
        super().__init__(image, strength)
        _check_jumps(jump_length, jump_n_sample)
        self.mask, self.jump_length, self.jump_n_sample = mask, int(jump_length), int(jump_n_sample)


def img2img_start(num_steps: int, strength: float) -> int:
    """How many of `num_steps` grid steps image-to-image skips: the chain starts at that index
    (num_steps: nothing is left to run, the image is returned as it is)."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1] (0: the image unchanged, 1: ignore it), got {strength}")
    return num_steps - min(int(num_steps * strength), num_steps)


def repaint_path(num_steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> list[int]:
    """The grid positions the RePaint chain visits, from 0 (the first timestep) to num_steps (the
    clean image); a position one higher is a denoising step, one lower a step back by the forward
    process. Every jump_length steps (not at the end) the chain climbs back jump_length positions,
    jump_n_sample - 1 times (Lugmayr et al. 2022, their schedule on a respaced grid)."""
    _check_jumps(jump_length, jump_n_sample)
    jumps = {i: jump_n_sample - 1 for i in range(jump_length, num_steps, jump_length)}
    path, i = [0], 0
    while i < num_steps:
        i += 1
        path.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump_length):
                i -= 1
                path.append(i)
    return path


def _check_jumps(jump_length, jump_n_sample):
    for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def batch_images(image, num: int, shape, what: str) -> np.ndarray | None:
    """`image` ((C, H, W) for every image, or (num, C, H, W)) as float32 (num, C, H, W); C may be 1 for a
    mask. Checks the size against `shape` (C, H, W)."""
    if image is None:
        return None
    arr = np.asarray(image, np.float32)
    if arr.ndim == 3:
        arr = np.broadcast_to(arr, (num, *arr.shape))
    c, h, w = shape
    if arr.ndim != 4 or arr.shape[0] != num or arr.shape[2:] != (h, w) or arr.shape[1] not in (1, c):
        raise ValueError(f"the {what} has shape {tuple(np.shape(image))}; expected ({c}, {h}, {w}) for every image "
                         f"or ({num}, {c}, {h}, {w}), one per image" + (" (1 channel is fine)" if what == "mask" else ""))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"the {what} holds NaN or infinite values")
    return np.ascontiguousarray(arr)


def read_image(image, shape, what: str = "image") -> np.ndarray:
    """A user's image as float32 (C, H, W) in [-1, 1] for a model making `shape` (C, H, W) images, or with
    what="mask" a mask as (1, H, W) of 0 (keep) and 1 (repaint; white in a mask file): from a file
    path, a PIL image, or an array (H, W), (H, W, C) or (C, H, W) of uint8 or of floats in [0, 1].
    Files (`open_image`) and PIL images in any mode (`in_mode`) are converted to the model's channels
    (grey or RGB) and resized to its size;
    arrays must already have its height and width. None stays None."""
    if image is None:
        return None
    c, h, w = shape
    if isinstance(image, (str, Path)):
        image = open_image(image, what)
    if isinstance(image, Image.Image):
        image = in_mode(image, c).resize((w, h), Image.Resampling.LANCZOS if what == "image" else Image.NEAREST)
        arr = np.asarray(image, np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # PIL's HWC, whatever H and W are
    else:
        arr = np.asarray(image)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise ValueError(f"a {what} array holds uint8 values or floats in [0, 1]; got {np.nanmin(arr):g}..{np.nanmax(arr):g}")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
        arr = arr.transpose(2, 0, 1)  # an array given as (H, W, C); a PIL image's is (C, H, W) by now
    if arr.ndim != 3 or arr.shape[1:] != (h, w):
        raise ValueError(f"the {what} has shape {np.shape(image)}; this model makes {h}x{w} images "
                         "(files and PIL images are resized, arrays are not)")
    if what != "image":  # a mask: one channel, 1 where any channel is set
        return (arr.max(axis=0, keepdims=True) >= 0.5).astype(np.float32)
    if arr.shape[0] == 3 and c == 1:
        arr = np.tensordot(np.array(LUMA, np.float32), arr, axes=1)[None]
    elif arr.shape[0] == 1 and c == 3:
        arr = np.repeat(arr, 3, axis=0)
    return arr * 2 - 1
