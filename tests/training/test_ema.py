"""The EMA's decay schedule, its arithmetic on weights a compiled step changes, and its
update interval."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops


from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.training.ema import EMA


class _Shift(nn.Cell):
    """Adds a constant to every weight inside a compiled graph, as an optimizer step would."""

    def __init__(self, params):
        super().__init__()
        self.params = ms.ParameterTuple(params)

    def construct(self, delta):
        for p in self.params:
            ops.assign(p, p + delta)
        return delta


def small_unet():
    return UNet(UNetConfig(image_size=(8, 8), dim=8, dim_mults=(1, 2)))


def weights(model):
    return {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}


def test_decay_warms_up_then_caps():
    model, shadow = small_unet(), small_unet()
    ema = EMA(model, shadow, decay=0.999)
    assert [ema.decay_at(n) for n in (0, 1, 10, 90)] == pytest.approx([0.1, 2 / 11, 11 / 20, 0.91])
    assert ema.decay_at(8990) == pytest.approx(0.999) and ema.decay_at(10 ** 6) == 0.999
    assert EMA(model, small_unet(), decay=0.9, warmup=False).decay_at(0) == 0.9


def test_average_of_weights_changed_by_a_compiled_step():
    model, shadow = small_unet(), small_unet()
    ema = EMA(model, shadow, decay=0.5, warmup=False)
    assert all(np.array_equal(a, b) for a, b in zip(weights(model).values(), weights(shadow).values())), \
        "the average starts at the model's weights"
    shift = ms.jit(_Shift(list(model.get_parameters())))
    start = weights(model)
    expected = dict(start)
    for k, delta in enumerate((0.01, -0.03, 0.02), start=1):
        shift(ms.Tensor(delta, ms.float32))
        live = weights(model)
        assert ema.update(k) == 0.5
        expected = {n: expected[n] + 0.5 * (live[n] - expected[n]) for n in expected}
    got = weights(shadow)
    assert max(np.abs(got[n] - expected[n]).max() for n in got) < 1e-6
    assert max(np.abs(got[n] - weights(model)[n]).max() for n in got) > 1e-3, "the average lags the weights"


def test_update_every_k_steps():
    model, shadow = small_unet(), small_unet()
    ema = EMA(model, shadow, decay=0.9, update_every=3)
    shift = ms.jit(_Shift(list(model.get_parameters())))
    shift(ms.Tensor(0.1, ms.float32))
    before = weights(shadow)
    assert ema.update(1) is None and ema.update(2) is None
    assert all(np.array_equal(before[n], v) for n, v in weights(shadow).items())
    assert ema.update(3) == pytest.approx(0.1) and ema.num_updates == 1
    live, got = weights(model), weights(shadow)  # the 3rd step averages, with the first (warm-up) decay 0.1
    assert max(np.abs(got[n] - (0.1 * before[n] + 0.9 * live[n])).max() for n in got) < 1e-6


def test_shadow_parameters_have_their_own_names():
    model, shadow = small_unet(), small_unet()
    EMA(model, shadow, decay=0.99)
    assert all(p.name.startswith("ema.") and not p.requires_grad for p in shadow.get_parameters())
    assert not any(p.name.startswith("ema.") for p in model.get_parameters())


def test_bad_settings_are_refused():
    model = small_unet()
    with pytest.raises(ValueError, match=r"EMA decay must be in \(0, 1\)"):
        EMA(model, small_unet(), decay=1.0)
    with pytest.raises(ValueError, match="same parameters"):
        EMA(model, UNet(UNetConfig(image_size=(8, 8), dim=12, dim_mults=(1, 2))), decay=0.9)
