"""The DDPM paper's U-Net: its size layer by layer (35.7M at the paper's CIFAR-10 settings), where
attention sits, the zero-initialised residual branches, labels, dropout, graph mode against
PyNative, and a loss that falls."""
import dataclasses
import mindspore as ms
import numpy as np
import pytest


from ddpm_ms.presets import preset
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import DDPMUNet, DDPMUNetConfig, build_model, count_parameters
from ddpm_ms.models.ddpm_unet import AttnBlock
from tiny_models import assert_learns, wake

PAPER = preset("cifar10").model
CONFIGS = [
    PAPER,
    preset("ddpm_unet_fashion_mnist").model,
    DDPMUNetConfig(image_size=(8, 12), channels=2, dim=8, dim_mults=(1, 3), num_res_blocks=1,
                attn_resolutions=(8, 4), resnet_groups=4, attn_heads=2, num_classes=3),
]


def expected_parameters(c) -> int:
    """Counted layer by layer from the paper's description (appendix B and its TF code), as a
    PyTorch user porting it would."""
    ch, temb = c.dim, 4 * c.dim

    def conv(n_in, n_out, k):
        return n_in * n_out * k * k + n_out

    def norm(n):
        return 2 * n

    def res(n_in, n_out):
        return (norm(n_in) + conv(n_in, n_out, 3) + (temb * n_out + n_out) + norm(n_out) + conv(n_out, n_out, 3)
                + (conv(n_in, n_out, 1) if n_in != n_out else 0))

    def attn(n):
        return norm(n) + 4 * conv(n, n, 1)  # q, k, v and the output projection

    total = (ch * temb + temb) + (temb * temb + temb)       # time MLP over a ch-wide sinusoid
    total += (c.num_classes + 1) * temb if c.num_classes else 0  # a row per class and "no class"
    total += conv(c.channels, ch, 3)
    side, width, skips = min(c.image_size), ch, [ch]
    for level, mult in enumerate(c.dim_mults):
        for _ in range(c.num_res_blocks):
            total += res(width, ch * mult) + (attn(ch * mult) if side in c.attn_resolutions else 0)
            width = ch * mult
            skips.append(width)
        if level < len(c.dim_mults) - 1:
            total += conv(width, width, 3)  # stride-2 convolution
            skips.append(width)
            side //= 2
    total += 2 * res(width, width) + attn(width)  # middle: block, attention, block
    for level, mult in reversed(list(enumerate(c.dim_mults))):
        for _ in range(c.num_res_blocks + 1):
            total += res(width + skips.pop(), ch * mult) + (attn(ch * mult) if side in c.attn_resolutions else 0)
            width = ch * mult
        if level > 0:
            total += conv(width, width, 3)  # after the nearest-neighbour 2x
            side *= 2
    return total + norm(width) + conv(width, c.channels, 3)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper-cifar10", "fashion-32", "tiny"])
def test_parameter_count_layer_by_layer(cfg):
    net = build_model(cfg)
    assert isinstance(net, DDPMUNet) and count_parameters(net) == expected_parameters(cfg)


def test_the_paper_configuration_has_its_35_7_million_parameters():
    """Ho et al. 2020: "Our CIFAR10 model has 35.7 million parameters". The count is 35,746,307 (as
    the public ports of the TF code count it), which is 35.7M to the paper's three figures; a 0.1%
    band around 35.7M (35,664,300..35,735,700) would miss it by 0.03%: the paper rounds."""
    n = count_parameters(build_model(PAPER))
    assert n == 35_746_307
    assert round(n / 1e6, 1) == 35.7


def test_attention_only_at_the_named_resolutions_and_in_the_middle():
    net = build_model(PAPER)
    names = [name for name, cell in net.cells_and_names() if isinstance(cell, AttnBlock)]
    # 16x16 is level 1: its 2 encoder blocks and 3 decoder blocks, plus the middle's one
    assert len(names) == 2 + 3 + 1, names
    assert sorted(names) == sorted(["down.3.attn", "down.4.attn", "mid1.attn", "up.8.attn", "up.9.attn",
                                    "up.10.attn"])


def test_untrained_model_predicts_zero_and_the_first_gradients_reach_the_output_conv(rng):
    """The last conv of every residual branch, the attention output and the output conv start at zero
    (the paper's code): the first prediction is 0 whatever the input, and the first gradients move
    only the output layer."""
    cfg = CONFIGS[2]
    net = build_model(cfg)
    x = ms.Tensor(rng.standard_normal((2, 2, 8, 12), dtype=np.float32))
    t = ms.Tensor(np.array([5, 500], np.int32))
    assert not net(x, t).asnumpy().any()
    grads = ms.grad(lambda x: (net(x, t) - x).square().sum(), grad_position=None, weights=net.trainable_params())(x)
    moved = {p.name for p, g in zip(net.trainable_params(), grads) if np.abs(g.asnumpy()).max() > 0}
    assert moved == {"final_conv.weight", "final_conv.bias"}, moved


def test_labels_change_the_output_and_no_label_is_the_no_class_row(rng):
    net = wake(build_model(CONFIGS[2]))
    x = ms.Tensor(rng.standard_normal((4, 2, 8, 12), dtype=np.float32))
    t = ms.Tensor(np.full(4, 300, np.int32))
    outs = [net(x, t, ms.Tensor(np.full(4, k, np.int32))).asnumpy() for k in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(outs[a] - outs[b]).max() > 1e-3, (a, b)
    np.testing.assert_array_equal(net(x, t).asnumpy(), outs[3])  # label 3 = num_classes = "no class"


def test_dropout_acts_in_training_only(rng):
    cfg = dataclasses.replace(CONFIGS[2], dropout=0.5)
    net = wake(build_model(cfg))
    x = ms.Tensor(rng.standard_normal((2, 2, 8, 12), dtype=np.float32))
    t, y = ms.Tensor(np.array([5, 500], np.int32)), ms.Tensor(np.array([0, 1], np.int32))
    net.set_train(True)
    assert np.abs(net(x, t, y).asnumpy() - net(x, t, y).asnumpy()).max() > 1e-3
    net.set_train(False)
    np.testing.assert_array_equal(net(x, t, y).asnumpy(), net(x, t, y).asnumpy())


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"attn_resolutions \(12,\) names a side length .* levels are \[32, 16, 8, 4\]"):
        build_model(DDPMUNetConfig(image_size=32, dim=32, dim_mults=(1, 2, 2, 2), resnet_groups=32,
                                attn_resolutions=(12,)))
    with pytest.raises(ValueError, match="divide by resnet_groups=32"):
        build_model(DDPMUNetConfig(image_size=32, dim=16, dim_mults=(1, 2), resnet_groups=32,
                                attn_resolutions=()))
    with pytest.raises(ValueError, match="does not divide by 2\\^\\(levels-1\\) = 8"):
        build_model(DDPMUNetConfig(image_size=28, dim=32, dim_mults=(1, 2, 2, 2), resnet_groups=32))
    with pytest.raises(ValueError, match="num_res_blocks must be >= 1"):
        build_model(DDPMUNetConfig(image_size=32, dim=32, resnet_groups=32, num_res_blocks=0))


def _diffusion(net):
    return GaussianDiffusion(net, NoiseSchedule(100, "linear"), "eps", "l2", p2_gamma=0.0)


def test_graph_mode_equals_pynative_forward_and_loss(rng):
    ms.set_seed(0)
    net = wake(build_model(CONFIGS[2]))
    net.set_train(False)
    x = ms.Tensor(rng.standard_normal((3, 2, 8, 12), dtype=np.float32))
    t, y = ms.Tensor(np.array([0, 40, 99], np.int32)), ms.Tensor(np.array([0, 2, 3], np.int32))
    np.testing.assert_allclose(ms.jit(net.construct)(x, t, y).asnumpy(), net(x, t, y).asnumpy(), rtol=1e-5, atol=1e-5)
    diffusion = _diffusion(net)
    noise = ms.Tensor(rng.standard_normal((3, 2, 8, 12), dtype=np.float32))
    eager = float(diffusion(x, t, noise, y).asnumpy())
    graph = float(ms.jit(diffusion.construct)(x, t, noise, y).asnumpy())
    assert eager > 0 and graph == pytest.approx(eager, rel=1e-5)


def test_a_tiny_ddpm_unet_learns(rng):
    """A few dozen compiled updates on one batch lower the loss measured at fixed timesteps and noise."""
    ms.set_seed(0)
    net = build_model(DDPMUNetConfig(image_size=(8, 8), channels=1, dim=8, dim_mults=(1, 2),
                                  num_res_blocks=1, attn_resolutions=(4,), resnet_groups=4, num_classes=2))
    assert_learns(_diffusion(net), rng)
