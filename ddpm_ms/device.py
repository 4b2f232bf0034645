"""The one place that picks the device target (Ascend > GPU > CPU) and the kernels that suit it.

Models never ask which device they run on: layers that have a faster formulation on some
target (see `ddpm_ms.models.layers`) ask `kernel_formulation()` once, at construction.
"""
from __future__ import annotations

import mindspore as ms

TARGETS = ("Ascend", "GPU", "CPU")
_selected: str | None = None


class DeviceUnavailable(RuntimeError):
    """The requested device target cannot be used on this machine."""


def _available(target: str) -> bool:
    try:
        return bool(ms.hal.is_available(target))
    except Exception:  # a missing plugin raises on some builds instead of returning False
        return False


def select_device(target: str = "auto") -> str:
    """Set MindSpore's device target and return it.

    `target` is "auto" (the first available of Ascend, GPU, CPU) or one of those names
    (any case). Asking for a target that is not available is an error that says which are.
    """
    global _selected
    wanted = target.strip()
    if wanted.lower() == "auto":
        chosen = next(t for t in TARGETS if t == "CPU" or _available(t))
    else:
        by_lower = {t.lower(): t for t in TARGETS}
        if wanted.lower() not in by_lower:
            raise ValueError(f"unknown device {target!r}: use auto, Ascend, GPU or CPU")
        chosen = by_lower[wanted.lower()]
        if chosen != "CPU" and not _available(chosen):
            found = [t for t in TARGETS if t == "CPU" or _available(t)]
            raise DeviceUnavailable(
                f"device {chosen} is not available on this machine (available: {', '.join(found)}); "
                "pass --device auto or one of those"
            )
    ms.set_device(chosen)
    _selected = chosen
    return chosen


def current_device() -> str:
    """The target chosen by `select_device`, or MindSpore's own default if none was chosen."""
    return _selected or ms.get_context("device_target")


def kernel_formulation(target: str | None = None) -> str:
    """"im2col" on CPU, where MindSpore's k x k convolution falls back to a reference kernel
    (about 40x slower than im2col + 1x1 convolution, see docs); "native" elsewhere."""
    return "im2col" if (target or current_device()) == "CPU" else "native"
