"""The one place that picks the device target (Ascend > GPU > CPU) and the kernels that suit it.

Models never ask which device they run on: layers that have a faster formulation on some
target (see `ddpm_ms.models.layers`) ask `kernel_formulation()` once, at construction.
"""
from __future__ import annotations

import os
import platform
import warnings

import mindspore as ms

from ddpm_ms import kernels

TARGETS = ("Ascend", "GPU", "CPU")
FORMULATIONS = ("native", "im2col", "aot")
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
    if chosen == "CPU":
        _tune_cpu_runtime()
    return chosen


def _tune_cpu_runtime() -> None:
    """Keep MindSpore's own threads off the cores our CPU kernels compute on.

    On a 2-core machine the default runtime costs about 40% of the train step: the Python thread
    waiting for a result busy-spins (AsyncRQueue::Wait) on one core, and MindSpore's kernel
    thread pool competes with the OpenMP threads of `ddpm_ms.kernels`. MS_DEV_HOST_BLOCKING_RUN
    makes the host pipeline run on the calling thread instead (read at its first task, so set
    here, before any graph runs); with the C++ kernels doing the heavy work, MindSpore's
    remaining kernels run single-threaded. Both are measured in docs/experiments/cpu_speed.md; an
    explicit setting in the environment wins.
    """
    os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")
    if kernel_formulation("CPU") == "aot" and "DDPM_MS_MS_THREADS" not in os.environ:
        _set_kernel_threads(1)
    elif os.environ.get("DDPM_MS_MS_THREADS"):
        _set_kernel_threads(int(os.environ["DDPM_MS_MS_THREADS"]))


_kernel_threads_set = False


def _set_kernel_threads(n: int) -> None:
    global _kernel_threads_set
    if _kernel_threads_set:
        return
    try:
        ms.device_context.cpu.op_tuning.threads_num(n)
    except (RuntimeError, ValueError, AttributeError):  # may be set only once per process
        pass
    _kernel_threads_set = True


def current_device() -> str:
    """The target chosen by `select_device`, or MindSpore's own default if none was chosen."""
    return _selected or ms.get_context("device_target")


def kernel_formulation(target: str | None = None) -> str:
    """How layers compute convolutions on `target` (default: the selected device).

    "native" on Ascend and GPU: MindSpore's own kernels. On CPU, "aot": the C++ kernels of
    `ddpm_ms.kernels` (oneDNN's convolutions and sgemm, called directly) when they can be built
    here, otherwise "im2col": `ops.unfold` + 1x1 convolution, because MindSpore 2.10 runs k x k convolutions on
    oneDNN's reference kernel (about 40x slower, see docs/performance.md).
    The environment variable DDPM_MS_KERNELS=native|im2col|aot overrides the choice.
    """
    forced = os.environ.get("DDPM_MS_KERNELS")
    if forced:
        if forced not in FORMULATIONS:
            raise ValueError(f"DDPM_MS_KERNELS={forced!r}: use one of {', '.join(FORMULATIONS)}")
        return forced
    if (target or current_device()) != "CPU":
        return "native"
    if kernels.available():
        return "aot"
    if not _warned_fallback:
        _warn_fallback(kernels.why_unavailable())
    return "im2col"


_warned_fallback = False


def _warn_fallback(reason: str) -> None:
    global _warned_fallback
    _warned_fallback = True
    warnings.warn(f"ddpm_ms: fast CPU kernels unavailable ({reason}); using pure MindSpore ops, "
                  "about 3x slower. See docs/performance.md.", RuntimeWarning, stacklevel=3)


def machine() -> str:
    """CPU model and core count, plus the framework versions: enough to tell two machines apart
    (benchmarks, evaluation records and model cards name it)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"MindSpore {ms.__version__}, {platform.system()}")
