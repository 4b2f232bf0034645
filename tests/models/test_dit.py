"""The DiT backbone: its size layer by layer, adaLN-Zero's identity start, patches in and out,
labels, graph mode against PyNative, and a loss that falls."""
import mindspore as ms
import numpy as np
import pytest


from ddpm_ms.presets import preset
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import DiT, DiTConfig, build_model, count_parameters
from ddpm_ms.models.dit import sincos_position_embedding
from ddpm_ms.models.layers import PatchEmbed
from tiny_models import assert_learns, wake

CONFIGS = [
    preset("dit_mnist").model,
    DiTConfig(image_size=(8, 12), channels=3, patch_size=2, hidden_size=32, depth=2, attn_heads=2,
                mlp_ratio=2.0),
    DiTConfig(image_size=(16, 16), channels=1, patch_size=8, hidden_size=24, depth=1, attn_heads=3,
                mlp_ratio=1.5, num_classes=4),
]


def expected_parameters(c) -> int:
    """Counted layer by layer from the DiT paper's description, as a PyTorch user would."""
    d, p, ch = c.hidden_size, c.patch_size, c.channels

    def linear(n_in, n_out):
        return n_in * n_out + n_out

    patch_embed = ch * p * p * d + d                                  # patch-size-stride convolution
    time_mlp = linear(256, d) + linear(d, d)                          # 256 sinusoid frequencies -> MLP
    labels = (c.num_classes + 1) * d if c.num_classes else 0           # a row per class and "no class"
    mlp = int(d * c.mlp_ratio)
    block = linear(d, 3 * d) + linear(d, d) + linear(d, mlp) + linear(mlp, d) + linear(d, 6 * d)
    final = linear(d, 2 * d) + linear(d, p * p * ch)                   # adaLN shift/scale, tile per token
    return patch_embed + time_mlp + labels + c.depth * block + final


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"p{c.patch_size}-d{c.hidden_size}-x{c.depth}-{c.image_size}")
def test_output_shape_and_parameter_count(cfg, rng):
    net = build_model(cfg)
    assert isinstance(net, DiT) and count_parameters(net) == expected_parameters(cfg)
    x = ms.Tensor(rng.standard_normal((2, cfg.channels, *cfg.image_size), dtype=np.float32))
    assert wake(net)(x, ms.Tensor(np.array([3, 900], np.int32))).shape == x.shape
    assert not any("pos_embed" in p.name for p in net.get_parameters()), "the positions are fixed, not learned"


def test_untrained_blocks_are_the_identity_and_the_model_predicts_zero(rng):
    """adaLN-Zero: the gates and the output layer start at zero, so each block passes its input
    through unchanged and the model's first prediction is 0; the first gradients reach only the
    output layer (the rest learns once it has moved)."""
    cfg = CONFIGS[2]
    net = build_model(cfg)
    tokens = ms.Tensor(rng.standard_normal((2, 4, cfg.hidden_size), dtype=np.float32))
    c = ms.Tensor(rng.standard_normal((2, cfg.hidden_size), dtype=np.float32))
    np.testing.assert_array_equal(net.blocks[0](tokens, c).asnumpy(), tokens.asnumpy())
    x = ms.Tensor(rng.standard_normal((2, 1, 16, 16), dtype=np.float32))
    t = ms.Tensor(np.array([5, 500], np.int32))
    assert not net(x, t).asnumpy().any()
    grads = ms.grad(lambda x: (net(x, t) - x).square().sum(), grad_position=None, weights=net.trainable_params())(x)
    moved = {p.name for p, g in zip(net.trainable_params(), grads) if np.abs(g.asnumpy()).max() > 0}
    assert moved == {"final_layer.linear.weight", "final_layer.linear.bias"}, moved


@pytest.mark.parametrize("formulation", ["native", "aot"])
def test_patchify_then_unpatchify_is_the_identity(formulation, rng):
    """With the patch convolution set to copy each pixel of a tile into its own channel, in the
    order the output layer writes a tile (row, column, channel), unpatchify undoes patchify."""
    cfg = DiTConfig(image_size=(8, 12), channels=3, patch_size=2, hidden_size=12, attn_heads=2)
    net = build_model(cfg)
    p, c = 2, 3
    weight = np.zeros((p * p * c, c, p, p), np.float32)
    for i in range(p):
        for j in range(p):
            for ch in range(c):
                weight[(i * p + j) * c + ch, ch, i, j] = 1.0
    embed = PatchEmbed(c, p * p * c, p, formulation=formulation)
    embed.weight.set_data(ms.Tensor(weight))
    embed.bias.set_data(ms.Tensor(np.zeros(p * p * c, np.float32)))
    x = rng.standard_normal((2, c, 8, 12)).astype(np.float32)
    tokens = embed(ms.Tensor(x))
    assert tokens.shape == (2, 4 * 6, 12)
    # token r * 6 + q holds the tile at row r, column q
    np.testing.assert_array_equal(tokens.asnumpy()[1, 1 * 6 + 4].reshape(p, p, c), x[1, :, 2:4, 8:10].transpose(1, 2, 0))
    np.testing.assert_array_equal(net.unpatchify(tokens).asnumpy(), x)


def test_position_embedding_tells_rows_and_columns_apart():
    pos = sincos_position_embedding(16, 3, 5)
    assert pos.shape == (15, 16)
    # the first half depends on the column only, the second on the row only
    np.testing.assert_array_equal(pos[0, :8], pos[5, :8])
    np.testing.assert_array_equal(pos[0, 8:], pos[4, 8:])
    assert len({row.tobytes() for row in pos}) == 15
    # MAE / DiT: frequency i of a half of width 8 is 1 / 10000^(i / 4): 1, 1/10, ...; token 13 = row 2, column 3
    np.testing.assert_allclose(pos[13, [0, 1, 4, 5]], [np.sin(3), np.sin(0.3), np.cos(3), np.cos(0.3)], rtol=1e-6)
    np.testing.assert_allclose(pos[13, [8, 9, 12, 13]], [np.sin(2), np.sin(0.2), np.cos(2), np.cos(0.2)], rtol=1e-6)


def test_labels_change_the_output_and_no_label_is_the_no_class_row(rng):
    net = wake(build_model(CONFIGS[2]))
    x = ms.Tensor(rng.standard_normal((4, 1, 16, 16), dtype=np.float32))
    t = ms.Tensor(np.full(4, 300, np.int32))
    outs = [net(x, t, ms.Tensor(np.full(4, k, np.int32))).asnumpy() for k in range(5)]
    for a in range(5):
        for b in range(a + 1, 5):
            assert np.abs(outs[a] - outs[b]).max() > 1e-3, (a, b)
    np.testing.assert_array_equal(net(x, t).asnumpy(), outs[4])  # label 4 = num_classes = "no class"
    mixed = net(x, t, ms.Tensor(np.array([0, 1, 2, 3], np.int32))).asnumpy()
    for k in range(4):
        np.testing.assert_allclose(mixed[k], outs[k][k], atol=1e-5)


@pytest.mark.parametrize("size,patch", [((28, 30), 4), ((28, 28), 3), ((9, 9), 2)])
def test_a_size_the_patch_does_not_divide_is_a_clear_error(size, patch):
    with pytest.raises(ValueError, match=f"does not divide by model.patch_size={patch}"):
        build_model(DiTConfig(image_size=size, patch_size=patch))


def test_bad_widths_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of 4 .* and of model.attn_heads=3"):
        build_model(DiTConfig(hidden_size=64, attn_heads=3))
    with pytest.raises(ValueError, match="model.depth must be >= 1"):
        build_model(DiTConfig(depth=0))
    with pytest.raises(ValueError, match="mlp_ratio=0.01 leaves the MLP no units"):
        build_model(DiTConfig(hidden_size=64, mlp_ratio=0.01))


def _diffusion(net):
    return GaussianDiffusion(net, NoiseSchedule(100, "cosine"), "eps", "huber")


def test_graph_mode_equals_pynative_forward_and_loss(rng):
    ms.set_seed(0)
    net = wake(build_model(CONFIGS[1]))
    x = ms.Tensor(rng.standard_normal((3, 3, 8, 12), dtype=np.float32))
    t = ms.Tensor(np.array([0, 40, 99], np.int32))
    np.testing.assert_allclose(ms.jit(net.construct)(x, t).asnumpy(), net(x, t).asnumpy(), rtol=1e-5, atol=1e-5)
    diffusion = _diffusion(net)
    noise = ms.Tensor(rng.standard_normal((3, 3, 8, 12), dtype=np.float32))
    eager = float(diffusion(x, t, noise).asnumpy())
    graph = float(ms.jit(diffusion.construct)(x, t, noise).asnumpy())
    assert eager > 0 and graph == pytest.approx(eager, rel=1e-5)


def test_a_tiny_dit_learns(rng):
    """A few dozen compiled updates on one batch lower the loss measured at fixed timesteps and noise."""
    ms.set_seed(0)
    net = build_model(DiTConfig(image_size=(8, 8), channels=1, patch_size=2, hidden_size=32, depth=2,
                                  attn_heads=2, num_classes=2))
    assert_learns(_diffusion(net), rng)
