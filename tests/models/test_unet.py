"""U-Net shapes, parameter counts (against a count derived by hand from the architecture),
size validation, and graph mode == PyNative mode."""
import mindspore as ms
import numpy as np
import pytest


from ddpm_ms.presets import preset
from ddpm_ms.models import UNet, UNetConfig, count_parameters


def conv(i, o, k, bias=True, groups=1):
    return o * (i // groups) * k * k + (o if bias else 0)


def dense(i, o):
    return i * o + o


def gn(c):
    return 2 * c


def expected_parameters(cfg) -> int:
    """Parameter count of the annotated-diffusion U-Net, written out layer by layer."""
    dim, tdim = cfg.dim, cfg.dim * 4
    init = cfg.init_dim or dim
    hid = cfg.attn_heads * cfg.attn_dim_head
    dims = [init] + [dim * m for m in cfg.dim_mults]
    in_out = list(zip(dims[:-1], dims[1:]))

    def block(i, o):
        if cfg.block == "resnet":
            n = dense(tdim, 2 * o) + conv(i, o, 3) + gn(o) + conv(o, o, 3) + gn(o)
        else:
            m = cfg.convnext_mult
            n = dense(tdim, i) + conv(i, i, 7, groups=i) + gn(i) + conv(i, o * m, 3) + gn(o * m) + conv(o * m, o, 3)
        return n + (conv(i, o, 1) if i != o else 0)

    def lin_attn(d):
        return gn(d) + conv(d, 3 * hid, 1, bias=False) + conv(hid, d, 1) + gn(d)

    total = conv(cfg.channels, init, 7) + dense(dim, tdim) + dense(tdim, tdim)
    for n, (i, o) in enumerate(in_out):
        last = n == len(in_out) - 1
        total += 2 * block(i, i) + lin_attn(i) + (conv(i, o, 3) if last else conv(4 * i, o, 1))
    mid = dims[-1]
    total += 2 * block(mid, mid) + gn(mid) + conv(mid, 3 * hid, 1, bias=False) + conv(hid, mid, 1)
    for i, o in reversed(in_out):
        total += 2 * block(o + i, o) + lin_attn(o) + conv(o, i, 3)
    return total + block(2 * init, dim) + conv(dim, cfg.channels, 1)


CONFIGS = [
    UNetConfig(image_size=28, channels=1, dim=28, dim_mults=(1, 2, 4)),
    UNetConfig(image_size=(16, 24), channels=3, dim=16, dim_mults=(1, 2, 4)),
    UNetConfig(image_size=(8, 12), channels=3, dim=8, init_dim=12, dim_mults=(1, 2), block="convnext"),
    UNetConfig(image_size=32, channels=2, dim=12, dim_mults=(1, 1, 2, 2), resnet_groups=2, attn_heads=2,
                attn_dim_head=8),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.block}-{c.dim}-{c.dim_mults}-{c.image_size}")
def test_output_shape_and_parameter_count(cfg, rng):
    net = UNet(cfg)
    h, w = cfg.image_size
    x = ms.Tensor(rng.standard_normal((2, cfg.channels, h, w), dtype=np.float32))
    y = net(x, ms.Tensor(np.array([3.0, 700.0], np.float32)))
    assert y.shape == (2, cfg.channels, h, w)
    assert np.isfinite(y.asnumpy()).all()
    assert count_parameters(net) == expected_parameters(cfg)


def test_default_preset_size():
    cfg = preset("fashion_mnist").model
    label_embedding = (cfg.num_classes + 1) * cfg.dim * 4  # 10 classes and "no class"
    assert count_parameters(UNet(cfg)) == expected_parameters(cfg) + label_embedding == 716_225


def test_output_depends_on_time(rng):
    net = UNet(UNetConfig(image_size=8, channels=1, dim=8, dim_mults=(1, 2)))
    x = ms.Tensor(rng.standard_normal((1, 1, 8, 8), dtype=np.float32))
    a = net(x, ms.Tensor(np.array([1.0], np.float32))).asnumpy()
    b = net(x, ms.Tensor(np.array([900.0], np.float32))).asnumpy()
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.parametrize("size,mults", [((28, 28), (1, 2, 4, 8)), ((30, 32), (1, 2, 4)), ((16, 18), (1, 2, 2))])
def test_size_that_does_not_divide_is_a_clear_error(size, mults):
    with pytest.raises(ValueError, match=r"does not divide by 2\^\(levels-1\)"):
        UNet(UNetConfig(image_size=size, dim_mults=mults))


def test_bad_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="resnet_groups"):
        UNet(UNetConfig(dim=10, resnet_groups=4))


def test_graph_mode_equals_pynative_forward(rng):
    ms.set_seed(0)
    net = UNet(UNetConfig(image_size=(8, 12), channels=1, dim=8, dim_mults=(1, 2)))
    net.set_train(False)
    x = ms.Tensor(rng.standard_normal((3, 1, 8, 12), dtype=np.float32))
    t = ms.Tensor(np.array([0.0, 10.0, 999.0], np.float32))
    eager = net(x, t).asnumpy()
    graph = ms.jit(net.construct)(x, t).asnumpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)


def test_class_conditional_unet(rng):
    """A class-conditional U-Net has one embedding row per class plus "no class", and its output
    depends on the label; leaving the label out is the "no class" label."""
    cfg = UNetConfig(image_size=8, channels=1, dim=8, dim_mults=(1, 2), num_classes=3)
    net = UNet(cfg)
    assert count_parameters(net) == expected_parameters(cfg) + 4 * cfg.dim * 4
    x = ms.Tensor(rng.standard_normal((4, 1, 8, 8)).astype(np.float32))
    t = ms.Tensor(np.full(4, 10.0, np.float32))
    outs = [net(x, t, ms.Tensor(np.full(4, k, np.int32))).asnumpy() for k in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(outs[a] - outs[b]).max() > 1e-4, (a, b)
    np.testing.assert_allclose(net(x, t).asnumpy(), outs[3], atol=1e-6)
    mixed = net(x, t, ms.Tensor(np.array([0, 1, 2, 3], np.int32))).asnumpy()
    for k in range(4):
        np.testing.assert_allclose(mixed[k], outs[k][k], atol=1e-5)
    assert not any("class_emb" in p.name for p in UNet(UNetConfig(image_size=8, dim=8, dim_mults=(1, 2)))
                   .trainable_params()), "an unconditional U-Net has no label embedding"
