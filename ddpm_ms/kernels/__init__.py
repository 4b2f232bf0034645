"""Hand-written CPU kernels, loaded into MindSpore graphs as `ops.Custom(func_type="aot")`.

MindSpore 2.10's CPU convolutions hand oneDNN plain NCHW descriptors; k x k convolutions then
run on oneDNN's reference kernel, and even 1x1 backward passes are slow inside a train step
(docs/experiments/cpu_speed.md). `cpu_kernels.cpp` calls the oneDNN library that MindSpore itself ships
(`mindspore/lib/libdnnl.so.3`, through its C API) directly: convolutions by its convolution
primitives with the blocked layouts its JIT kernels want (the plain tensors are reordered in and
out, a few images at a time, in per-thread buffers), matrix products by `dnnl_sgemm` or, for
bfloat16, its matmul primitive; the batch is split across OpenMP threads. Norms, softmaxes,
attention and the elementwise work are plain C++ loops written to vectorise.

The library is compiled with the system C++ compiler on first use and cached under
`$DDPM_MS_KERNEL_CACHE` (default `~/.cache/ddpm_ms/kernels`), keyed by the source, the flags,
the MindSpore version and the CPU. Where no compiler or no `libdnnl.so.3` is found,
`available()` is False, `why_unavailable()` says why, and layers fall back to the pure-MindSpore
formulation (see `ddpm_ms.device.kernel_formulation`).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import mindspore
from mindspore import ops

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
STRIDES = (1, 2)
PADDINGS = (0, 1, 2, 3)
# GCC vectorises with 256-bit registers on AVX-512 CPUs unless told otherwise; the kernels' own loops
# (softmax, GELU, the norms) run on full-width registers where the CPU has them.
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_state = {"why": None}


def _mindspore_lib_dir() -> Path:
    return Path(mindspore.__file__).parent / "lib"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    return Path(os.environ.get("DDPM_MS_KERNEL_CACHE", Path.home() / ".cache" / "ddpm_ms" / "kernels"))


@lru_cache(maxsize=None)
def library() -> str | None:
    """Path of the compiled kernel library, building it if needed; None if it cannot be built."""
    if platform.system() != "Linux":
        _state["why"] = f"the CPU kernels are built for Linux only (this is {platform.system()})"
        return None
    dnnl = _mindspore_lib_dir() / "libdnnl.so.3"
    if not dnnl.exists():
        _state["why"] = f"MindSpore's oneDNN library was not found at {dnnl}"
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        _state["why"] = "no C++ compiler (g++) on PATH; install one to get the fast CPU kernels"
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), mindspore.__version__.encode(),
                                     _cpu_signature().encode(), compiler.encode()])).hexdigest()[:16]
    target = cache_dir() / f"ddpm_ms_cpu_kernels_{key}.so"
    if target.exists():
        return str(target)
    cmd = [compiler, *_FLAGS, str(SOURCE), "-o", "OUT", f"-L{dnnl.parent}", "-l:libdnnl.so.3",
           f"-Wl,-rpath,{dnnl.parent}"]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as err:
        _state["why"] = f"cannot write the kernel cache {target.parent} ({err}); set DDPM_MS_KERNEL_CACHE"
        return None
    cmd[cmd.index("OUT")] = tmp
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        failure = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]
    except (OSError, subprocess.TimeoutExpired) as err:
        failure = str(err)
    if failure:
        os.unlink(tmp)
        _state["why"] = f"compiling {SOURCE.name} with {compiler} failed: {failure}"
        return None
    os.replace(tmp, target)  # atomic: a concurrent process sees no file or the whole file
    return str(target)


def available() -> bool:
    """True when the CPU kernel library is built (or can be built) on this machine."""
    return library() is not None


def why_unavailable() -> str | None:
    library()
    return _state["why"]


def cpu_has_bf16() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo),
    so the `bf16=True` kernels run faster than float32 rather than emulating."""
    flags = _cpu_signature().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _suffix(bf16: bool) -> str:
    """Entry-point suffix: "_bf16" kernels round both operands of every matrix product to bfloat16
    and accumulate in float32 (oneDNN's matmul); inputs, outputs and everything else stay float32."""
    return "_bf16" if bf16 else ""


@lru_cache(maxsize=None)
def conv2d_op(stride: int, padding: int, bias: bool = False, bf16: bool = False):
    """`y = op(x, w)` or, with `bias`, `y = op(x, w, b)`: a groups=1 convolution of x (b, c, h, w)
    with w (o, c, k, k), with its backward pass (input, weight and bias gradients) also in C++;
    with `bf16`, every product of the three in bfloat16."""
    if stride not in STRIDES or padding not in PADDINGS:
        raise ValueError(f"the CPU convolution kernel supports stride {STRIDES} and padding {PADDINGS}, "
                         f"not stride={stride}, padding={padding}")

    lib = _require()
    tag = f"s{stride}_p{padding}{_suffix(bf16)}"

    def out_shape(x, w, *bias_shape):
        k = w[2]
        return [x[0], w[0], (x[2] + 2 * padding - k) // stride + 1, (x[3] + 2 * padding - k) // stride + 1]

    grad_input = ops.Custom(f"{lib}:ConvBwdInput_{tag}", lambda dy, w, x: x, _same_dtype, func_type="aot")
    if not bias:
        grad_weight = ops.Custom(f"{lib}:ConvBwdWeight_{tag}", lambda x, dy, w: w, _same_dtype, func_type="aot")

        def bprop(x, w, out, dout):
            return grad_input(dout, w, x), grad_weight(x, dout, w)

        return ops.Custom(f"{lib}:ConvFwd_{tag}", out_shape, _same_dtype, func_type="aot", bprop=bprop)

    grad_weight_bias = ops.Custom(f"{lib}:ConvBiasBwdWeight_{tag}", lambda x, dy, w: (w, w[:1]),
                                  lambda x, dy, w: (w, w), func_type="aot")

    def bprop_bias(x, w, b, out, dout):
        dw, db = grad_weight_bias(x, dout, w)
        return grad_input(dout, w, x), dw, db

    return ops.Custom(f"{lib}:ConvBiasFwd_{tag}", out_shape, _same_dtype, func_type="aot", bprop=bprop_bias)


def _same_dtype(*dtypes):
    return dtypes[0]


@lru_cache(maxsize=None)
def group_norm_op(eps: float):
    """`y, mean, rstd = op(x, gamma, beta)`: GroupNorm of x viewed as (b, groups, -1) with
    per-channel gamma and beta, backward in C++. (The groups travel in the shape: MindSpore
    caches a Custom op's shape inference by its function name.)"""

    if eps not in (1e-5, 1e-6):
        raise ValueError(f"the CPU GroupNorm kernel supports eps 1e-5 and 1e-6, not {eps}")
    lib = _require()
    backward = ops.Custom(f"{lib}:GroupNormBwd", lambda dy, x, m, r, g: (x, g, g),
                          lambda *d: (d[1], d[4], d[4]), func_type="aot")

    def bprop(x, gamma, beta, out, dout):
        return backward(dout[0], x, out[1], out[2], gamma)

    tag = "eps5" if eps == 1e-5 else "eps6"
    return ops.Custom(f"{lib}:GroupNormFwd_{tag}", lambda x, g, b: (x, x[:2], x[:2]),
                      lambda x, g, b: (x, x, x), func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def softmax_op():
    """`y = op(x)`: softmax over axis 1 of a 3-D tensor (outer, r, inner), backward in C++."""

    lib = _require()
    backward = ops.Custom(f"{lib}:SoftmaxBwd", lambda y, dy: y, _same_dtype, func_type="aot")

    def bprop(x, out, dout):
        return (backward(out, dout),)

    return ops.Custom(f"{lib}:SoftmaxFwd", lambda x: x, _same_dtype, func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def upsample2x_op():
    """`y = op(x)`: nearest-neighbour 2x upsampling of (b, c, h, w); backward sums 2x2 blocks."""

    lib = _require()
    backward = ops.Custom(f"{lib}:Upsample2xBwd", lambda dy, x: x, _same_dtype, func_type="aot")

    def bprop(x, out, dout):
        return (backward(dout, x),)

    return ops.Custom(f"{lib}:Upsample2xFwd", lambda x: [x[0], x[1], 2 * x[2], 2 * x[3]], _same_dtype,
                      func_type="aot", bprop=bprop)


def _require() -> str:
    lib = library()
    if lib is None:
        raise RuntimeError(f"CPU kernels unavailable: {why_unavailable()}")
    return lib


@lru_cache(maxsize=None)
def group_norm_silu_op(eps: float = 1e-5):
    """`y, mean, rstd = op(x, gamma, beta, scale, shift)`: SiLU(GroupNorm(x) * (1 + scale) + shift)
    with x viewed as (b, groups, -1), scale and shift (b, c); backward in C++."""

    if eps not in (1e-5, 1e-6):
        raise ValueError(f"the CPU GroupNorm kernel supports eps 1e-5 and 1e-6, not {eps}")
    lib = _require()
    backward = ops.Custom(f"{lib}:GroupNormSiluBwd",
                          lambda dy, x, m, r, g, b, sc, sh: (x, g, g, sc, sc),
                          lambda *d: (d[1], d[4], d[4], d[6], d[6]), func_type="aot")

    def bprop(x, gamma, beta, scale, shift, out, dout):
        return backward(dout[0], x, out[1], out[2], gamma, beta, scale, shift)

    name = "GroupNormSiluFwd" if eps == 1e-5 else "GroupNormSiluFwd_eps6"
    return ops.Custom(f"{lib}:{name}", lambda x, g, b, sc, sh: (x, x[:2], x[:2]),
                      lambda x, *rest: (x, x, x), func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def group_norm_silu_plain_op(eps: float):
    """`y, mean, rstd = op(x, gamma, beta)`: SiLU(GroupNorm(x)) with x viewed as (b, groups, -1)
    (the DDPM U-Net's "norm -> SiLU"); backward in C++."""

    if eps not in (1e-5, 1e-6):
        raise ValueError(f"the CPU GroupNorm kernel supports eps 1e-5 and 1e-6, not {eps}")
    lib = _require()
    backward = ops.Custom(f"{lib}:GroupNormSiluPlainBwd", lambda dy, x, m, r, g, b: (x, g, g),
                          lambda *d: (d[1], d[4], d[4]), func_type="aot")

    def bprop(x, gamma, beta, out, dout):
        return backward(dout[0], x, out[1], out[2], gamma, beta)

    tag = "eps5" if eps == 1e-5 else "eps6"
    return ops.Custom(f"{lib}:GroupNormSiluPlainFwd_{tag}", lambda x, g, b: (x, x[:2], x[:2]),
                      lambda x, g, b: (x, x, x), func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def batch_matmul_ops(bf16: bool = False):
    """(nn, tn, nt): batched products a.b, a^T.b and a.b^T over the leading dimensions, each with
    its backward expressed through the three (in bfloat16 with `bf16`)."""

    lib = _require()
    shape = {"NN": lambda a, b: a[:-1] + [b[-1]],
             "TN": lambda a, b: a[:-2] + [a[-1], b[-1]],
             "NT": lambda a, b: a[:-2] + [a[-2], b[-2]]}
    suffix = _suffix(bf16)
    raw = {k: ops.Custom(f"{lib}:BatchMatMul{k}{suffix}", f, _same_dtype, func_type="aot") for k, f in shape.items()}

    def bprop_nn(a, b, out, dout):  # c = a b
        return raw["NT"](dout, b), raw["TN"](a, dout)

    def bprop_tn(a, b, out, dout):  # c = a^T b, a stored (k, m)
        return raw["NT"](b, dout), raw["NN"](a, dout)

    def bprop_nt(a, b, out, dout):  # c = a b^T, b stored (n, k)
        return raw["NN"](dout, b), raw["TN"](dout, a)

    return tuple(ops.Custom(f"{lib}:BatchMatMul{k}{suffix}", shape[k], _same_dtype, func_type="aot", bprop=bp)
                 for k, bp in (("NN", bprop_nn), ("TN", bprop_tn), ("NT", bprop_nt)))


@lru_cache(maxsize=None)
def dense_op(bf16: bool = False):
    """`y = op(x, w, b)`: x (m, in) . w^T (w: out x in) + b, backward in C++ (products in bfloat16
    with `bf16`)."""

    lib = _require()
    suffix = _suffix(bf16)
    backward = ops.Custom(f"{lib}:DenseBwd{suffix}", lambda x, w, dy: (x, w, w[:1]), lambda x, w, dy: (x, x, x),
                          func_type="aot")

    def bprop(x, w, b, out, dout):
        return backward(x, w, dout)

    return ops.Custom(f"{lib}:DenseFwd{suffix}", lambda x, w, b: [x[0], w[0]], _same_dtype, func_type="aot",
                      bprop=bprop)


@lru_cache(maxsize=None)
def gelu_tanh_op():
    """`y = op(x)`: GELU with the tanh approximation, elementwise; backward in C++."""

    lib = _require()
    backward = ops.Custom(f"{lib}:GeluTanhBwd", lambda x, dy: x, _same_dtype, func_type="aot")

    def bprop(x, out, dout):
        return (backward(x, dout),)

    return ops.Custom(f"{lib}:GeluTanhFwd", lambda x: x, _same_dtype, func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def layer_norm_modulate_op(eps: float):
    """`y, mean, rstd = op(x, shift, scale)`: LayerNorm of x (b, n, d) over d, without affine,
    times (1 + scale) plus shift, both (b, d); backward (dx, dshift, dscale) in C++."""

    if eps not in (1e-5, 1e-6):
        raise ValueError(f"the CPU LayerNorm kernel supports eps 1e-5 and 1e-6, not {eps}")
    lib = _require()
    backward = ops.Custom(f"{lib}:LayerNormModBwd", lambda dy, x, m, r, sc: (x, sc, sc),
                          lambda *d: (d[1], d[4], d[4]), func_type="aot")

    def bprop(x, shift, scale, out, dout):
        dx, dshift, dscale = backward(dout[0], x, out[1], out[2], scale)
        return dx, dshift, dscale

    tag = "eps5" if eps == 1e-5 else "eps6"
    return ops.Custom(f"{lib}:LayerNormModFwd_{tag}", lambda x, sh, sc: (x, x[:2], x[:2]),
                      lambda x, sh, sc: (x, x, x), func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def attention_op():
    """`out, p = op(qkv)`: multi-head self-attention of packed projections qkv (b, n, 3, heads, dh)
    to out (b, n, heads, dh), with p (b, heads, n, n) the attention probabilities; backward in C++."""

    lib = _require()
    backward = ops.Custom(f"{lib}:AttentionBwd", lambda dout, qkv, p: qkv, lambda *d: d[1], func_type="aot")

    def bprop(qkv, out, dout):
        return (backward(dout[0], qkv, out[1]),)

    def out_shape(qkv):
        b, n, _, heads, dh = qkv
        return [b, n, heads, dh], [b, heads, n, n]

    return ops.Custom(f"{lib}:AttentionFwd", out_shape, lambda d: (d, d), func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def gated_add_op():
    """`out = op(x, gate, y)`: x + gate * y for x, y (b, n, d) and a per-sample gate (b, d);
    backward in C++ (the gate's gradient is summed over n inside the kernel)."""

    lib = _require()
    backward = ops.Custom(f"{lib}:GatedAddBwd", lambda dout, g, y: (y, g), lambda *d: (d[2], d[1]),
                          func_type="aot")

    def bprop(x, gate, y, out, dout):
        dy, dgate = backward(dout, gate, y)
        return dout, dgate, dy

    return ops.Custom(f"{lib}:GatedAddFwd", lambda x, g, y: x, _same_dtype, func_type="aot", bprop=bprop)


@lru_cache(maxsize=None)
def linear_attention_op(bf16: bool = False):
    """`out = op(x, w)`: the U-Net's linear attention with its projection, for x (b, c, h, w) and the
    1x1 projection's weight viewed as w (3, heads, d, c): [q; k; v] = w x, then per head
    context = softmax_pixels(k) v^T / sqrt(d) and out = context^T softmax_features(q), (b, heads, d, h w),
    in one pass per image; the backward pass recomputes q, k, v and the softmaxes. Products in
    bfloat16 with `bf16`."""

    lib = _require()
    suffix = _suffix(bf16)
    backward = ops.Custom(f"{lib}:LinearAttentionBwd{suffix}", lambda dout, x, w: (x, w), lambda *d: (d[1], d[2]),
                          func_type="aot")

    def bprop(x, w, out, dout):
        return backward(dout, x, w)

    return ops.Custom(f"{lib}:LinearAttentionFwd{suffix}", lambda x, w: [x[0], w[1], w[2], x[2] * x[3]],
                      lambda x, w: x, func_type="aot", bprop=bprop)
