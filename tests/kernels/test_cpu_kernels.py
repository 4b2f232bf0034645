"""The C++ CPU kernels ("aot" formulation) agree with MindSpore's own ops in outputs and in
gradients with respect to inputs and parameters, layer by layer and for the whole U-Net and DiT."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from ddpm_ms import kernels

from ddpm_ms.models import DDPMUNet, DDPMUNetConfig, DiT, DiTConfig, UNet, UNetConfig
from ddpm_ms.models.layers import (BatchMatMul, Conv2d, Dense, GatedResidual, Gelu, GroupNorm, LayerNorm, LinearAttentionCore,
                                   PackedSelfAttention, PatchEmbed, Softmax, UpsampleNearest2x)

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason=f"CPU kernels cannot be built here: {kernels.why_unavailable()}")


def _copy_parameters(src, dst):
    src_params, dst_params = list(src.get_parameters()), list(dst.get_parameters())
    assert [p.name for p in src_params] == [p.name for p in dst_params]
    for a, b in zip(src_params, dst_params):
        assert a.shape == b.shape
        b.set_data(a.data.copy())


def _outputs_and_grads(cell, *inputs, jit=False):
    """Output, input gradients and parameter gradients of sum(y * sin(y)) (a non-trivial cotangent)."""
    params = cell.trainable_params()

    def loss(*xs):
        y = cell(*xs)
        return (y * ops.sin(y)).sum()

    grad_fn = ms.value_and_grad(loss, grad_position=tuple(range(len(inputs))), weights=params or None)
    if jit:
        grad_fn = ms.jit(grad_fn)
    _, grads = grad_fn(*inputs)
    if params:
        input_grads, param_grads = grads
    else:
        input_grads, param_grads = grads, ()
    if not isinstance(input_grads, (tuple, list)):
        input_grads = (input_grads,)
    return (cell(*inputs).asnumpy(), [g.asnumpy() for g in input_grads], [g.asnumpy() for g in param_grads])


class _WithTime(ms.nn.Cell):
    """net(x, t[, y]) as a function of x alone, for the whole-model checks."""

    def __init__(self, net, t, y=None):
        super().__init__()
        self.net, self.t, self.y = net, t, y

    def construct(self, x):
        if self.y is None:
            return self.net(x, self.t)
        return self.net(x, self.t, self.y)


def _assert_agree(reference, candidate, rtol=1e-4, atol=1e-4):
    (y0, gx0, gp0), (y1, gx1, gp1) = reference, candidate
    assert y0.shape == y1.shape
    np.testing.assert_allclose(y1, y0, rtol=rtol, atol=atol)
    for a, b in zip(gx1, gx0):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert len(gp0) == len(gp1)
    for a, b in zip(gp1, gp0):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("kwargs,size", [
    (dict(in_channels=5, out_channels=7, kernel_size=3, padding=1), (9, 11)),
    (dict(in_channels=1, out_channels=6, kernel_size=7, padding=3), (12, 8)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, stride=2), (10, 10)),
    (dict(in_channels=3, out_channels=5, kernel_size=3, padding=0, has_bias=False), (7, 9)),
    (dict(in_channels=6, out_channels=9, kernel_size=1), (5, 7)),
    (dict(in_channels=12, out_channels=5, kernel_size=1, space_to_depth=True), (6, 8)),
])
def test_conv_kernel_matches_native(kwargs, size, rng):
    native = Conv2d(**kwargs, formulation="native")
    aot = Conv2d(**kwargs, formulation="aot")
    assert aot.formulation == "aot"
    _copy_parameters(native, aot)
    channels = kwargs["in_channels"] // (4 if kwargs.get("space_to_depth") else 1)
    x = ms.Tensor(rng.standard_normal((3, channels, *size), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))


class _Chunks(ms.nn.Cell):
    """Weights each chunk of an out_splits convolution differently, so every chunk's gradient counts."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def construct(self, x):
        q, k, v = self.conv(x)
        return ops.cat((q, 2 * k, -v), axis=1)


@pytest.mark.parametrize("formulation", ["native", "im2col"])
def test_split_output_conv_matches_conv_then_split(formulation, rng):
    reference = _Chunks(Conv2d(4, 9, 1, has_bias=False, out_splits=3, formulation=formulation))
    aot = _Chunks(Conv2d(4, 9, 1, has_bias=False, out_splits=3, formulation="aot"))
    _copy_parameters(reference, aot)
    x = ms.Tensor(rng.standard_normal((2, 4, 5, 6), dtype=np.float32))
    _assert_agree(_outputs_and_grads(reference, x), _outputs_and_grads(aot, x))
    _assert_agree(_outputs_and_grads(reference, x, jit=True), _outputs_and_grads(aot, x, jit=True))


def test_grouped_conv_falls_back_to_im2col():
    assert Conv2d(6, 6, 7, padding=3, groups=6, formulation="aot").formulation == "im2col"


@pytest.mark.parametrize("groups,channels,shape", [(1, 6, (5, 7)), (4, 8, (6, 6)), (2, 4, (3,))])
def test_group_norm_kernel_matches_native(groups, channels, shape, rng):
    native = GroupNorm(groups, channels, formulation="native")
    aot = GroupNorm(groups, channels, formulation="aot")
    assert aot.formulation == "aot"
    for p in native.get_parameters():  # non-trivial affine parameters
        p.set_data(ms.Tensor(rng.standard_normal(p.shape, dtype=np.float32)))
    _copy_parameters(native, aot)
    x = ms.Tensor(3 + 2 * rng.standard_normal((3, channels, *shape), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))


class _Modulated(ms.nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, scale, shift):
        return self.norm.modulated_silu(x, scale, shift)


class _NormSilu(ms.nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x):
        return self.norm.silu(x)


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
@pytest.mark.parametrize("groups,channels", [(1, 6), (4, 8)])
def test_fused_group_norm_silu_matches_native(groups, channels, eps, rng):
    native = _NormSilu(GroupNorm(groups, channels, eps=eps, formulation="native"))
    aot = _NormSilu(GroupNorm(groups, channels, eps=eps, formulation="aot"))
    assert aot.norm._fused_plain is not None
    for p in native.get_parameters():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape, dtype=np.float32)))
    _copy_parameters(native, aot)
    x = ms.Tensor(1 + 2 * rng.standard_normal((3, channels, 5, 4), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))
    # the kernel uses its own eps: on a group of spread 1e-3, 1e-5 and 1e-6 give different outputs
    flat = ms.Tensor(1 + 1e-3 * rng.standard_normal((3, channels, 5, 4), dtype=np.float32))
    np.testing.assert_allclose(aot(flat).asnumpy(), native(flat).asnumpy(), rtol=1e-3, atol=1e-3)
    other = _NormSilu(GroupNorm(groups, channels, eps=1e-5 if eps == 1e-6 else 1e-6, formulation="native"))
    _copy_parameters(native, other)
    assert np.abs(other(flat).asnumpy() - native(flat).asnumpy()).max() > 0.05


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
@pytest.mark.parametrize("groups,channels", [(1, 6), (4, 8)])
def test_fused_group_norm_modulation_silu_matches_native(groups, channels, eps, rng):
    native = _Modulated(GroupNorm(groups, channels, eps=eps, formulation="native"))
    aot = _Modulated(GroupNorm(groups, channels, eps=eps, formulation="aot"))
    for p in native.get_parameters():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape, dtype=np.float32)))
    _copy_parameters(native, aot)
    x = ms.Tensor(1 + 2 * rng.standard_normal((3, channels, 5, 4), dtype=np.float32))
    scale = ms.Tensor(0.5 * rng.standard_normal((3, channels, 1, 1), dtype=np.float32))
    shift = ms.Tensor(rng.standard_normal((3, channels, 1, 1), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x, scale, shift), _outputs_and_grads(aot, x, scale, shift))


@pytest.mark.parametrize("axis,shape", [(-1, (2, 3, 4, 17)), (-2, (2, 3, 5, 17)), (1, (4, 6, 3))])
def test_softmax_kernel_matches_native(axis, shape, rng):
    x = ms.Tensor(3 * rng.standard_normal(shape, dtype=np.float32))
    native, aot = Softmax(axis, formulation="native"), Softmax(axis, formulation="aot")
    assert aot.formulation == "aot"
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x), atol=1e-5)
    np.testing.assert_allclose(aot(x).asnumpy().sum(axis=axis), 1.0, rtol=1e-5)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_kernel_on_extreme_logits_and_nan(axis):
    """The kernel's own exp (a polynomial, vectorised) against float64 softmax where std::exp's range
    ends: logits ten thousand apart, at +-88, and a NaN, which must not vanish."""
    rows = np.array([[0.0, -1e4, 1e4, 3.0], [88.5, -88.5, 87.0, 0.0], [-100.0, -100.0, -100.0, -190.0],
                     [1.0, np.nan, 2.0, 3.0]], dtype=np.float32)
    x = rows if axis == -1 else rows.T[None].copy()  # axis 1 of (1, 4, 4): the strided layout
    out = Softmax(axis, formulation="aot")(ms.Tensor(x)).asnumpy()
    out = out if axis == -1 else out[0].T
    finite = rows[:3].astype(np.float64)
    expected = np.exp(finite - finite.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[:3], expected, rtol=1e-6, atol=1e-30)
    assert np.isnan(out[3]).all()  # as NumPy's and PyTorch's; MindSpore's CPU op keeps it at the NaN alone


@pytest.mark.parametrize("heads,d,c,size", [(2, 8, 5, (5, 6)), (3, 5, 8, (7, 7))])
def test_linear_attention_kernel_matches_native(heads, d, c, size, rng):
    """Projection, both softmaxes and both products, with gradients for the input and the weight."""
    x = ms.Tensor(rng.standard_normal((2, c, *size), dtype=np.float32))
    w = ms.Tensor(rng.standard_normal((3 * heads * d, c, 1, 1), dtype=np.float32))
    native, aot = (LinearAttentionCore(heads, d, formulation=f) for f in ("native", "aot"))
    assert aot.formulation == "aot"
    # the outputs are large here, so sums that cancel to small values keep float32 rounding whose size
    # depends on the CPU's summation order: the default atol
    _assert_agree(_outputs_and_grads(native, x, w), _outputs_and_grads(aot, x, w))
    _assert_agree(_outputs_and_grads(native, x, w, jit=True), _outputs_and_grads(aot, x, w, jit=True))


@pytest.mark.parametrize("ta,tb,a_shape,b_shape", [
    (False, False, (2, 3, 4, 5), (2, 3, 5, 6)),
    (True, False, (2, 3, 5, 4), (2, 3, 5, 6)),
    (False, True, (2, 3, 4, 5), (2, 3, 6, 5)),
    (False, False, (3, 7, 2), (3, 2, 9)),
])
def test_batch_matmul_kernel_matches_native(ta, tb, a_shape, b_shape, rng):
    a = ms.Tensor(rng.standard_normal(a_shape, dtype=np.float32))
    b = ms.Tensor(rng.standard_normal(b_shape, dtype=np.float32))
    native = BatchMatMul(ta, tb, formulation="native")
    aot = BatchMatMul(ta, tb, formulation="aot")
    assert aot.formulation == "aot"
    _assert_agree(_outputs_and_grads(native, a, b), _outputs_and_grads(aot, a, b))


# the last two pass the kernel's threshold for dnnl_sgemm, whose rows and output rows split over the threads unevenly
@pytest.mark.parametrize("rows,cols_in,cols_out", [(3, 5, 4), (2, 64, 128), (37, 64, 97), (245, 64, 384)])
def test_dense_kernel_matches_native(rows, cols_in, cols_out, rng):
    native, aot = Dense(cols_in, cols_out, formulation="native"), Dense(cols_in, cols_out, formulation="aot")
    assert aot.formulation == "aot"
    _copy_parameters(native, aot)
    x = ms.Tensor(rng.standard_normal((rows, cols_in), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))


def test_upsample_kernel_matches_native(rng):
    x = ms.Tensor(rng.standard_normal((2, 3, 4, 5), dtype=np.float32))
    native, aot = UpsampleNearest2x(formulation="native"), UpsampleNearest2x(formulation="aot")
    assert aot.formulation == "aot"
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x), atol=1e-6)


@pytest.mark.parametrize("shape,cols_out", [((2, 7, 6), 5), ((5, 49, 64), 384)])
def test_dense_kernel_takes_tokens(shape, cols_out, rng):
    native, aot = Dense(shape[-1], cols_out, formulation="native"), Dense(shape[-1], cols_out, formulation="aot")
    _copy_parameters(native, aot)
    x = ms.Tensor(rng.standard_normal(shape, dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))


def test_gelu_kernel_matches_native(rng):
    x = ms.Tensor(np.concatenate([np.linspace(-12, 12, 241, dtype=np.float32),
                                  3 * rng.standard_normal(241, dtype=np.float32)]).reshape(2, 1, 241))
    native, aot = Gelu(formulation="native"), Gelu(formulation="aot")
    assert aot.formulation == "aot"
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x), rtol=1e-5, atol=2e-6)


class _Modulate(ms.nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, shift, scale):
        return self.norm.modulate(x, shift, scale)


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_layer_norm_modulation_kernel_matches_native(eps, rng):
    native, aot = _Modulate(LayerNorm(24, eps, formulation="native")), _Modulate(LayerNorm(24, eps, formulation="aot"))
    assert aot.norm.formulation == "aot"
    x = ms.Tensor(2 + 3 * rng.standard_normal((3, 5, 24), dtype=np.float32))
    shift = ms.Tensor(rng.standard_normal((3, 24), dtype=np.float32))
    scale = ms.Tensor(0.5 * rng.standard_normal((3, 24), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x, shift, scale), _outputs_and_grads(aot, x, shift, scale))


@pytest.mark.parametrize("heads,head_dim,tokens", [(4, 8, 9), (1, 5, 3), (3, 16, 49)])
def test_packed_attention_kernel_matches_native(heads, head_dim, tokens, rng):
    native, aot = PackedSelfAttention(heads, formulation="native"), PackedSelfAttention(heads, formulation="aot")
    assert aot.formulation == "aot"
    qkv = ms.Tensor(rng.standard_normal((2, tokens, 3 * heads * head_dim), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, qkv), _outputs_and_grads(aot, qkv), atol=1e-5)


def test_packed_attention_is_softmax_attention_per_head(rng):
    """The native formulation against NumPy, head by head, in the packed [q | k | v] layout."""
    heads, dh, n = 2, 3, 4
    qkv = rng.standard_normal((1, n, 3 * heads * dh)).astype(np.float32)
    got = PackedSelfAttention(heads, formulation="native")(ms.Tensor(qkv)).asnumpy()
    q, k, v = np.split(qkv[0], 3, axis=-1)
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        scores = q[:, cols] @ k[:, cols].T / np.sqrt(dh)
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        np.testing.assert_allclose(got[0][:, cols], weights @ v[:, cols], rtol=1e-5, atol=1e-6)


def test_gated_residual_kernel_matches_native(rng):
    native, aot = GatedResidual(formulation="native"), GatedResidual(formulation="aot")
    assert aot.formulation == "aot"
    x, y = (ms.Tensor(rng.standard_normal((3, 5, 8), dtype=np.float32)) for _ in range(2))
    gate = ms.Tensor(rng.standard_normal((3, 8), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x, gate, y), _outputs_and_grads(aot, x, gate, y))


@pytest.mark.parametrize("channels,patch,size", [(1, 4, (8, 12)), (3, 2, (6, 4))])
def test_patch_embedding_kernel_matches_native(channels, patch, size, rng):
    native, aot = PatchEmbed(channels, 16, patch, formulation="native"), PatchEmbed(channels, 16, patch, formulation="aot")
    assert aot.formulation == "aot"
    _copy_parameters(native, aot)
    x = ms.Tensor(rng.standard_normal((2, channels, *size), dtype=np.float32))
    _assert_agree(_outputs_and_grads(native, x), _outputs_and_grads(aot, x))


def _dit(formulation, monkeypatch):
    monkeypatch.setenv("DDPM_MS_KERNELS", formulation)
    return DiT(DiTConfig(image_size=(8, 12), channels=2, patch_size=2, hidden_size=16, depth=2,
                           attn_heads=2, mlp_ratio=2.0, num_classes=3))


def test_dit_with_kernels_matches_pure_mindspore_in_graph_mode(monkeypatch, rng):
    reference, fast = _dit("native", monkeypatch), _dit("aot", monkeypatch)
    kinds = {cell.formulation for _, cell in fast.cells_and_names() if hasattr(cell, "formulation")}
    assert kinds == {"aot"} and "aot" not in {c.formulation for _, c in reference.cells_and_names()
                                              if hasattr(c, "formulation")}
    for p in reference.trainable_params():  # away from adaLN-Zero's zeros, so that every layer counts
        p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    _copy_parameters(reference, fast)
    x = ms.Tensor(rng.standard_normal((3, 2, 8, 12), dtype=np.float32))
    t, y = ms.Tensor(np.array([1, 400, 999], np.int32)), ms.Tensor(np.array([0, 3, 2], np.int32))

    _assert_agree(_outputs_and_grads(_WithTime(reference, t, y), x, jit=True),
                  _outputs_and_grads(_WithTime(fast, t, y), x, jit=True), rtol=1e-3, atol=1e-4)


def _unet(formulation, monkeypatch):
    monkeypatch.setenv("DDPM_MS_KERNELS", formulation)
    cfg = UNetConfig(image_size=(8, 8), channels=1, dim=8, dim_mults=(1, 2), resnet_groups=4,
                      attn_heads=2, attn_dim_head=4)
    return UNet(cfg)


def test_unet_with_kernels_matches_pure_mindspore_in_graph_mode(monkeypatch, rng):
    reference, fast = _unet("im2col", monkeypatch), _unet("aot", monkeypatch)

    def formulations(net):
        return {cell.formulation for _, cell in net.cells_and_names() if hasattr(cell, "formulation")}

    # the comparison means something only if one net runs the kernels and the other does not
    assert "aot" in formulations(fast) and "aot" not in formulations(reference), (formulations(fast),
                                                                                   formulations(reference))
    _copy_parameters(reference, fast)
    x = ms.Tensor(rng.standard_normal((3, 1, 8, 8), dtype=np.float32))
    t, y = ms.Tensor(np.array([1, 400, 999], np.int32)), None

    _assert_agree(_outputs_and_grads(_WithTime(reference, t, y), x, jit=True),
                  _outputs_and_grads(_WithTime(fast, t, y), x, jit=True), rtol=1e-3, atol=1e-4)


def _ddpm_unet(formulation, monkeypatch):
    monkeypatch.setenv("DDPM_MS_KERNELS", formulation)
    return DDPMUNet(DDPMUNetConfig(image_size=(8, 8), channels=2, dim=8, dim_mults=(1, 2),
                                num_res_blocks=1, attn_resolutions=(4,), resnet_groups=4, attn_heads=2,
                                num_classes=3))


def test_ddpm_unet_with_kernels_matches_pure_mindspore_in_graph_mode(monkeypatch, rng):
    """Every layer of the DDPM U-Net has a kernel on CPU (no im2col or native fallback), and the
    model agrees with its native formulation in outputs and gradients."""
    reference, fast = _ddpm_unet("native", monkeypatch), _ddpm_unet("aot", monkeypatch)
    kinds = {cell.formulation for _, cell in fast.cells_and_names() if hasattr(cell, "formulation")}
    assert kinds == {"aot"}, kinds
    assert "aot" not in {c.formulation for _, c in reference.cells_and_names() if hasattr(c, "formulation")}
    for p in reference.trainable_params():  # away from the zero-initialised layers, so that every layer counts
        p.set_data(ms.Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    _copy_parameters(reference, fast)
    x = ms.Tensor(rng.standard_normal((3, 2, 8, 8), dtype=np.float32))
    t, y = ms.Tensor(np.array([1, 400, 999], np.int32)), ms.Tensor(np.array([0, 3, 2], np.int32))

    _assert_agree(_outputs_and_grads(_WithTime(reference, t, y), x, jit=True),
                  _outputs_and_grads(_WithTime(fast, t, y), x, jit=True), rtol=1e-3, atol=1e-3)


def test_unknown_formulation_in_the_environment_is_named(monkeypatch):
    from ddpm_ms.device import kernel_formulation
    monkeypatch.setenv("DDPM_MS_KERNELS", "fast")
    with pytest.raises(ValueError, match="DDPM_MS_KERNELS='fast'"):
        kernel_formulation()
