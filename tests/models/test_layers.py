"""The convolution seam: both formulations share parameters and agree in outputs and gradients."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from ddpm_ms.models.layers import Conv2d, SinusoidalTimeEmbedding, space_to_depth, upsample_nearest


def _pair(kwargs, rng):
    native = Conv2d(**kwargs, formulation="native")
    im2col = Conv2d(**kwargs, formulation="im2col")
    for p_native, p_im2col in zip(native.get_parameters(), im2col.get_parameters()):
        assert p_native.name == p_im2col.name and p_native.shape == p_im2col.shape
        p_im2col.set_data(p_native.data.copy())
    return native, im2col


@pytest.mark.parametrize("kwargs,size", [
    (dict(in_channels=5, out_channels=7, kernel_size=3, padding=1), (9, 11)),
    (dict(in_channels=1, out_channels=6, kernel_size=7, padding=3), (12, 8)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, stride=2), (10, 10)),
    (dict(in_channels=6, out_channels=6, kernel_size=7, padding=3, groups=6), (8, 8)),
    (dict(in_channels=6, out_channels=4, kernel_size=3, padding=0, groups=2, has_bias=False), (7, 9)),
])
def test_im2col_matches_native_outputs_and_gradients(kwargs, size, rng):
    native, im2col = _pair(kwargs, rng)
    assert im2col.formulation == "im2col" and native.formulation == "native"
    x = ms.Tensor(rng.standard_normal((2, kwargs["in_channels"], *size), dtype=np.float32))
    results = []
    for conv in (native, im2col):
        def loss(inp, conv=conv):
            y = conv(inp)
            return (y * ops.sin(y)).sum()  # a non-trivial cotangent
        grad_fn = ms.value_and_grad(loss, grad_position=0, weights=conv.trainable_params())
        value, (gx, gw) = grad_fn(x)
        results.append((conv(x).asnumpy(), gx.asnumpy(), [g.asnumpy() for g in gw]))
    (y0, gx0, gw0), (y1, gx1, gw1) = results
    assert y0.shape == y1.shape
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-4)
    for a, b in zip(gw1, gw0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_conv_matches_numpy_reference(rng):
    conv = Conv2d(3, 2, 3, padding=1, formulation="im2col")
    x = rng.standard_normal((1, 3, 5, 6), dtype=np.float32)
    w, b = conv.weight.asnumpy(), conv.bias.asnumpy()
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 2, 5, 6), np.float32)
    for o in range(2):
        for i in range(5):
            for j in range(6):
                ref[0, o, i, j] = (xp[0, :, i:i + 3, j:j + 3] * w[o]).sum() + b[o]
    np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), ref, rtol=1e-5, atol=1e-5)


def test_one_by_one_conv_always_uses_the_native_fast_path():
    assert Conv2d(4, 8, 1, formulation="im2col").formulation == "native"


def test_bad_conv_arguments_are_named():
    with pytest.raises(ValueError, match="groups"):
        Conv2d(5, 6, 3, groups=2)
    with pytest.raises(ValueError, match="formulation"):
        Conv2d(4, 4, 3, formulation="winograd")


def test_space_to_depth_and_upsample_match_numpy(rng):
    x = rng.standard_normal((2, 3, 4, 6), dtype=np.float32)
    s2d = space_to_depth(ms.Tensor(x)).asnumpy()
    ref = x.reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4).reshape(2, 12, 2, 3)
    np.testing.assert_array_equal(s2d, ref)
    up = upsample_nearest(ms.Tensor(x)).asnumpy()
    np.testing.assert_array_equal(up, x.repeat(2, axis=2).repeat(2, axis=3))


def test_time_embedding_matches_formula():
    emb = SinusoidalTimeEmbedding(8)(ms.Tensor(np.array([0.0, 5.0, 999.0], np.float32))).asnumpy()
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    args = np.array([0.0, 5.0, 999.0])[:, None] * freqs
    np.testing.assert_allclose(emb, np.concatenate([np.sin(args), np.cos(args)], 1), rtol=1e-4, atol=1e-4)


def test_layer_norm_modulate_takes_half_precision_tokens_and_returns_their_dtype(rng):
    # Mixed precision hands a DiT block float16 tokens and a method call skips the cell's casts
    # (amp's float32 for the cell): modulate itself must compute accurately and give back float16.
    # 64 values near 1,500 sum past float16's largest number.
    from ddpm_ms.models.layers import LayerNorm
    norm = LayerNorm(64, formulation="native")
    x = (1500 + 4 * rng.standard_normal((2, 3, 64))).astype(np.float16)
    shift, scale = (rng.standard_normal((2, 64)).astype(np.float16) for _ in range(2))
    y = norm.modulate(ms.Tensor(x), ms.Tensor(shift), ms.Tensor(scale))
    assert y.dtype == ms.float16
    xf = x.astype(np.float64)
    ref = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + 1e-6)
    ref = ref * (1 + scale.astype(np.float64)[:, None]) + shift.astype(np.float64)[:, None]
    np.testing.assert_allclose(y.asnumpy().astype(np.float64), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("jit", [False, True])
def test_exact_gelu_is_mindspores_and_its_written_out_derivative_matches_autodiff(jit, rng):
    """ExactGelu computes what nn.GELU(approximate=False) computes, bit for bit, and its hand-written
    backward (which keeps PowTensorScalar out of the graph) agrees with MindSpore's autodiff of it."""
    from mindspore import nn

    from ddpm_ms.models.layers import ExactGelu

    x = ms.Tensor(rng.normal(0, 2, (5, 7)).astype(np.float32))
    mine, theirs = ExactGelu(), nn.GELU(approximate=False)
    np.testing.assert_array_equal(mine(x).asnumpy(), theirs(x).asnumpy())
    cot = ms.Tensor(rng.normal(0, 1, (5, 7)).astype(np.float32))

    def grad_of(cell):
        def loss(v):
            return (cell(v) * cot).sum()

        fn = ms.grad(loss)
        return (ms.jit(fn) if jit else fn)(x).asnumpy()

    np.testing.assert_allclose(grad_of(mine), grad_of(theirs), rtol=1e-5, atol=1e-6)
    xs = x.asnumpy().astype(np.float64)
    from math import erf, pi, sqrt
    exact = np.vectorize(lambda v: 0.5 * (1 + erf(v / sqrt(2))) + v * np.exp(-v * v / 2) / sqrt(2 * pi))(xs)
    np.testing.assert_allclose(grad_of(mine), exact * cot.asnumpy(), rtol=1e-5, atol=1e-6)
