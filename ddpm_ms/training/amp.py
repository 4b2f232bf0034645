"""Mixed precision: which layers compute in float16 / bfloat16, and the loss scale.

- O0: everything in float32.
- O1: convolutions and dense layers take `dtype` inputs (the bulk of the FLOPs); normalisation,
  softmax and both attentions (the U-Net's linear one, the DiT's) cast their inputs back to
  float32; elementwise layers compute in whatever precision reaches them.
- O2: the whole network computes in `dtype` except GroupNorm, LayerNorm, softmax and the
  attentions, which keep float32 (their statistics and exponentials lose too much in 16 bits).

Weights stay float32 (the optimizer and the EMA update them in float32); casts sit on each
layer's inputs (`Cell.to_float`). The loss is computed in float32. float16 training needs a
dynamic loss scale so that small gradients do not flush to zero; bfloat16 has float32's range
and needs none.

On CPU, MindSpore's own kernels take float32 only, so nothing is cast there. Instead, on a CPU
that multiplies bfloat16 natively (AVX512-BF16 or AMX), `--amp O1 --amp-dtype bfloat16` makes the
C++ kernels of the convolutions, dense layers and attention products round both operands to
bfloat16 and accumulate in float32 (oneDNN's bfloat16 primitives), forward and backward, as PyTorch's CPU
autocast does for its matrix products; norms, softmax and everything else stay float32. O2 runs
as O1 there. Every other CPU combination falls back to O0, with one message that says why.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn

from ddpm_ms import kernels
from ddpm_ms.config import AMP_DTYPES, AMP_LEVELS
from ddpm_ms.device import current_device, kernel_formulation
from ddpm_ms.models import layers

DTYPES = {"float16": ms.float16, "bfloat16": ms.bfloat16}
_LOW_PRECISION_CELLS = (nn.Conv2d, nn.Dense, layers.Conv2d, layers.Dense, layers.PatchEmbed)
_FLOAT32_CELLS = (nn.GroupNorm, nn.LayerNorm, layers.Softmax, layers.LayerNorm, layers.PackedSelfAttention,
                  layers.LinearAttentionCore)


def resolve_amp(level: str, dtype: str, device: str) -> tuple[str, str, str | None]:
    """(level, dtype that will run, message or None). What the device cannot run is replaced,
    with a message naming the reason and what runs instead."""
    if level not in AMP_LEVELS or dtype not in AMP_DTYPES:
        raise ValueError(f"amp level must be one of {AMP_LEVELS} and dtype one of {AMP_DTYPES}, "
                         f"got {level!r}, {dtype!r}")
    if level == "O0":
        return "O0", dtype, None
    if device == "CPU":
        return _resolve_cpu(level, dtype)
    if device == "GPU" and dtype == "bfloat16" and not _gpu_has_bf16():
        return level, "float16", (f"amp {level} with bfloat16 needs a GPU with compute capability 8.0 or newer; "
                                  f"training with {level} in float16 (with loss scaling) instead")
    return level, dtype, None


def _resolve_cpu(level: str, dtype: str) -> tuple[str, str, str | None]:

    fallback = "; training in float32 (O0) instead"
    if dtype != "bfloat16":
        return "O0", dtype, (f"amp {level} with {dtype} is not supported on CPU (MindSpore's CPU kernels take "
                             f"float32 only; bfloat16 runs in the C++ kernels: --amp-dtype bfloat16){fallback}")
    if kernel_formulation("CPU") != "aot":
        why = kernels.why_unavailable() or "DDPM_MS_KERNELS selects another formulation"
        return "O0", dtype, f"amp {level} with bfloat16 on CPU runs in the C++ kernels, which are off ({why}){fallback}"
    if not kernels.cpu_has_bf16():
        return "O0", dtype, (f"amp {level} with bfloat16 is not supported on this CPU (/proc/cpuinfo lists neither "
                             f"avx512_bf16 nor amx_bf16, so bfloat16 would be emulated){fallback}")
    if level == "O2":
        return "O1", dtype, ("amp O2 on CPU runs as O1: bfloat16 covers the C++ kernels' matrix products, "
                             "the rest stays float32 (MindSpore's CPU kernels take float32 only)")
    return level, dtype, None


def _gpu_has_bf16() -> bool:
    try:
        major = ms.hal.get_device_capability(0)[0]
    except Exception:  # unknown: let MindSpore report it if the kernels are missing
        return True
    return major >= 8


def apply_amp(model: nn.Cell, level: str, dtype: str, device: str | None = None) -> nn.Cell:
    """Set the compute dtype of `model`'s layers for `level` (in place; returns `model`), for
    `device` (default: the selected one); `level` and `dtype` as `resolve_amp` returned them."""
    if level == "O0":
        return model
    if (device or current_device()) == "CPU":  # no casts: the kernels take bfloat16 inside
        for _, cell in model.cells_and_names():
            if hasattr(cell, "use_bfloat16_matmuls"):
                cell.use_bfloat16_matmuls()
        return model
    low = DTYPES[dtype]
    if level == "O1":
        for _, cell in model.cells_and_names():
            if isinstance(cell, _LOW_PRECISION_CELLS):
                cell.to_float(low)
    else:
        model.to_float(low)
    for _, cell in model.cells_and_names():  # at both levels: they receive low-precision outputs
        if isinstance(cell, _FLOAT32_CELLS):
            cell.to_float(ms.float32)
    return model


def compute_dtypes(model: nn.Cell) -> dict:
    """{cell name: "float16" | "bfloat16" | "float32" | None} as set by `apply_amp` (None: inherits
    its inputs' dtype)."""
    out = {}
    for name, cell in model.cells_and_names():
        flags = cell.get_flags() if hasattr(cell, "get_flags") else {}
        out[name] = next((k for k, key in (("float16", "fp16"), ("bfloat16", "bf16"), ("float32", "fp32"))
                          if flags.get(key)), None)
    return out


def loss_scaler(level: str, dtype: str, initial_scale: float):
    """A dynamic loss scaler for float16 training (halves on overflow, doubles after 1,000 clean
    steps), or None when no scaling is needed."""
    if level == "O0" or dtype != "float16":
        return None
    return ms.amp.DynamicLossScaler(scale_value=float(initial_scale), scale_factor=2, scale_window=1000)
