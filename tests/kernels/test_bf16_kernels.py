"""The "_bf16" C++ kernels (`--amp O1 --amp-dtype bfloat16` on CPU) round both operands of every
matrix product to bfloat16 and accumulate in float32, forward and backward.

Each layer is checked two ways: against the float32 kernel fed operands already rounded to
bfloat16 (products of bfloat16 values are exact in float32, so the two differ by summation order
alone: a kernel that skipped the rounding, or accumulated in bfloat16, fails), and against the
float32 kernel on the raw operands within bfloat16's tolerance."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms import kernels
from ddpm_ms.models.layers import BatchMatMul, Conv2d, Dense, LinearAttentionCore, PatchEmbed

pytestmark = pytest.mark.skipif(not (kernels.available() and kernels.cpu_has_bf16()),
                                reason="needs the CPU kernels and a CPU with AVX512-BF16 or AMX "
                                       f"(kernels: {kernels.why_unavailable() or 'built'}; "
                                       f"bfloat16 instructions: {kernels.cpu_has_bf16()})")


def round_bf16(a):
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _pair(make, bf16_params=False):
    """A float32 layer and a bfloat16 one with the same parameters."""
    ref, low = make(), make()
    for a, b in zip(ref.get_parameters(), low.get_parameters()):
        b.set_data(a.data.copy())
    assert low.use_bfloat16_matmuls() and low.matmul_dtype == "bfloat16" and ref.matmul_dtype == "float32"
    return ref, low


def _forward_and_grads(cell, inputs, cotangent):
    """Output, and the gradients of sum(output * cotangent) (so the output's gradient is exactly
    `cotangent`) with respect to the inputs and the weights."""
    params = [p for p in cell.trainable_params() if p.name.endswith("weight")]
    g = ms.Tensor(cotangent)

    def loss(*xs):
        return (cell(*xs) * g).sum()

    _, (gx, gw) = ms.value_and_grad(loss, grad_position=tuple(range(len(inputs))), weights=params)(
        *[ms.Tensor(x) for x in inputs])
    gx = gx if isinstance(gx, tuple) else (gx,)
    return [cell(*[ms.Tensor(x) for x in inputs]).asnumpy()] + [t.asnumpy() for t in gx] + [t.asnumpy() for t in gw]


def _rounded_weights(cell):
    for p in cell.trainable_params():
        if p.name.endswith("weight"):
            p.set_data(ms.Tensor(round_bf16(p.asnumpy())))


def _check(make, inputs, rng):
    ref, low = _pair(make)
    out_shape = ref(*[ms.Tensor(x) for x in inputs]).shape
    cotangent = rng.standard_normal(out_shape).astype(np.float32)
    got = _forward_and_grads(low, inputs, cotangent)
    loose = _forward_and_grads(ref, inputs, cotangent)
    _rounded_weights(ref)
    exact = _forward_and_grads(ref, [round_bf16(x) for x in inputs], round_bf16(cotangent))
    for g, e, l in zip(got, exact, loose):
        scale = np.abs(e).max()
        np.testing.assert_allclose(g, e, rtol=0, atol=2e-6 * scale)  # the same products, other summation order
        assert np.abs(g - l).max() <= 2e-2 * scale   # bfloat16 keeps 8 bits: a few parts in 1,000
        assert np.abs(g - l).max() > 0               # and the operands were rounded


@pytest.mark.parametrize("kwargs,channels,size", [
    (dict(in_channels=16, out_channels=24, kernel_size=3, padding=1), 16, (12, 10)),
    (dict(in_channels=8, out_channels=12, kernel_size=3, padding=1, stride=2, has_bias=False), 8, (10, 10)),
    (dict(in_channels=3, out_channels=16, kernel_size=7, padding=3), 3, (9, 8)),
    (dict(in_channels=32, out_channels=8, kernel_size=1), 32, (7, 7)),
    (dict(in_channels=16, out_channels=12, kernel_size=1, space_to_depth=True), 4, (8, 6)),
])
def test_bf16_convolution_rounds_operands_and_accumulates_in_float32(kwargs, channels, size, rng):
    x = rng.standard_normal((3, channels, *size)).astype(np.float32)
    _check(lambda: Conv2d(**kwargs, formulation="aot"), [x], rng)


def test_bf16_convolution_split_outputs(rng):
    ref, low = _pair(lambda: Conv2d(8, 24, 1, has_bias=False, out_splits=3, formulation="aot"))
    x = ms.Tensor(rng.standard_normal((2, 8, 5, 5)).astype(np.float32))
    for a, b in zip(ref(x), low(x)):
        assert 0 < np.abs(a.asnumpy() - b.asnumpy()).max() <= 2e-2 * np.abs(a.asnumpy()).max()


@pytest.mark.parametrize("rows,cols_in,cols_out", [(5, 7, 3), (300, 64, 96)])  # below and above the threaded size
def test_bf16_dense_rounds_operands_and_accumulates_in_float32(rows, cols_in, cols_out, rng):
    _check(lambda: Dense(cols_in, cols_out, formulation="aot"), [rng.standard_normal((rows, cols_in)).astype(np.float32)],
           rng)


def test_bf16_patch_embedding(rng):
    _check(lambda: PatchEmbed(3, 32, 4, formulation="aot"), [rng.standard_normal((2, 3, 8, 12)).astype(np.float32)], rng)


@pytest.mark.parametrize("ta,tb,a_shape,b_shape", [
    (False, False, (2, 3, 4, 40), (2, 3, 40, 6)),
    (True, False, (2, 3, 40, 4), (2, 3, 40, 6)),
    (False, True, (2, 3, 4, 40), (2, 3, 6, 40)),
])
def test_bf16_batch_matmul_rounds_operands_and_accumulates_in_float32(ta, tb, a_shape, b_shape, rng):
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (a_shape, b_shape))
    _check(lambda: BatchMatMul(ta, tb, formulation="aot"), [a, b], rng)


def test_bf16_linear_attention_is_close_to_float32(rng):
    """Its softmaxes stay float32, so only the tolerance check applies (the rounded-operand
    reference would need q, k and their softmaxes, which never leave the kernel)."""
    x = ms.Tensor(rng.standard_normal((2, 8, 6, 7)).astype(np.float32))
    w = ms.Tensor(0.5 * rng.standard_normal((3 * 3 * 8, 8, 1, 1)).astype(np.float32))
    g = ms.Tensor(rng.standard_normal((2, 3, 8, 42)).astype(np.float32))
    ref, low = _pair(lambda: LinearAttentionCore(3, 8, formulation="aot"))
    for a, b in zip(*(ms.value_and_grad(lambda *t: (cell(*t) * g).sum(), grad_position=(0, 1))(x, w)[1]
                      for cell in (ref, low))):
        a, b = a.asnumpy(), b.asnumpy()
        assert 0 < np.abs(a - b).max() <= 2e-2 * np.abs(a).max()


def test_native_layers_stay_float32():
    for layer in (Conv2d(4, 4, 3, padding=1, formulation="native"), Dense(4, 4, formulation="native"),
                  BatchMatMul(formulation="native")):
        assert not layer.use_bfloat16_matmuls() and layer.matmul_dtype == "float32"
