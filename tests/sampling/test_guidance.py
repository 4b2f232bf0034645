"""Classifier-free guidance in the sampling loop: the guided output is uncond + w (cond - uncond),
optionally rescaled to the conditional output's spread and limited to an interval of timesteps,
w = 1 is the conditional model and w = 0 the unconditional one, labels reach the right images across batches, and bad labels are clear
errors; for each backbone."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import (ClassifierFreeGuidance, DDIMScheduler, balanced_labels, noise_generator, sample,
                              sample_batch)
from ddpm_ms.sampling.model_call import rescale_guidance
from tiny_models import ARCHS, tiny_model

SHAPE = (3, 1, 8, 8)


@pytest.fixture(scope="module", params=ARCHS)
def net(request):
    """A class-conditional model of each backbone (a DiT with its zero-initialised layers redrawn)."""
    return tiny_model(request.param, image_size=8, channels=1, num_classes=4)


@pytest.fixture
def scheduler():
    return DDIMScheduler(NoiseSchedule(100, "cosine"), clip_sample=False)


def draw(net, scheduler, steps, labels, *guidance, **kwargs):
    """sample's images from x_T() on a grid of `steps`, eagerly."""
    scheduler.set_timesteps(steps)
    return sample(net, scheduler, SHAPE, x_T=x_T(), class_labels=labels, guidance=list(guidance), jit=False,
                  progress=False, **kwargs)[0]


def x_T(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def test_guided_step_mixes_conditional_and_unconditional_outputs(net, scheduler):
    labels, w = np.array([0, 2, 3], np.int32), 2.5
    got = draw(net, scheduler, 3, labels, ClassifierFreeGuidance(w))
    x = ms.Tensor(x_T())
    for t in scheduler.timesteps:
        tt = ms.Tensor(np.full(3, float(t), np.float32))
        cond = net(x, tt, ms.Tensor(labels)).asnumpy()
        uncond = net(x, tt, ms.Tensor(np.full(3, 4, np.int32))).asnumpy()
        x = scheduler.step(ms.Tensor(uncond + w * (cond - uncond)), int(t), x).prev_sample
    np.testing.assert_allclose(got, x.asnumpy(), atol=1e-4)


def test_rescaled_guidance_matches_the_conditional_spread_per_image(net, scheduler, rng):
    cond = rng.normal(0.0, 1.0, (2, 1, 4, 4)).astype(np.float32)
    uncond = rng.normal(0.0, 0.5, (2, 1, 4, 4)).astype(np.float32)
    guided = uncond + 4.0 * (cond - uncond)
    full = rescale_guidance(ms.Tensor(guided), ms.Tensor(cond), 1.0).asnumpy()
    np.testing.assert_allclose(full.reshape(2, -1).std(1), cond.reshape(2, -1).std(1), rtol=1e-5)
    np.testing.assert_allclose(full / guided, (full / guided).reshape(2, -1)[:, :1, None, None] * np.ones_like(full),
                               rtol=1e-4)  # one factor per image: the direction is kept
    blend = rescale_guidance(ms.Tensor(guided), ms.Tensor(cond), 0.7).asnumpy()
    np.testing.assert_allclose(blend, 0.7 * full + 0.3 * guided, atol=1e-5)

    labels, w, phi = np.array([0, 2, 3], np.int32), 3.0, 0.7
    got = draw(net, scheduler, 3, labels, ClassifierFreeGuidance(w, rescale=phi))
    x = ms.Tensor(x_T())
    for t in scheduler.timesteps:  # by hand, with NumPy's std
        tt = ms.Tensor(np.full(3, float(t), np.float32))
        c = net(x, tt, ms.Tensor(labels)).asnumpy()
        u = net(x, tt, ms.Tensor(np.full(3, 4, np.int32))).asnumpy()
        g = u + w * (c - u)
        ratio = c.reshape(3, -1).std(1) / g.reshape(3, -1).std(1)
        out = phi * g * ratio[:, None, None, None] + (1 - phi) * g
        x = scheduler.step(ms.Tensor(out.astype(np.float32)), int(t), x).prev_sample
    np.testing.assert_allclose(got, x.asnumpy(), atol=1e-4)
    plain = draw(net, scheduler, 3, labels, ClassifierFreeGuidance(w))
    assert np.abs(plain - got).max() > 1e-3
    with pytest.raises(ValueError, match="guidance_rescale"):
        ClassifierFreeGuidance(2.0, rescale=1.5)


def test_guidance_interval_guides_only_the_steps_inside_it(net, scheduler):
    labels, w = np.array([0, 2, 3], np.int32), 3.0
    scheduler.set_timesteps(4)
    steps = [int(t) for t in scheduler.timesteps]  # 75, 50, 25, 0
    lo, hi = steps[2], steps[1]  # the middle two steps only

    def guided(interval, scale=w):
        return draw(net, scheduler, 4, labels, ClassifierFreeGuidance(scale, interval=interval))

    got = guided((lo, hi))
    scheduler.set_timesteps(4)
    x = ms.Tensor(x_T())
    for t in steps:  # by hand: guided inside [lo, hi], the conditional model alone outside
        tt = ms.Tensor(np.full(3, float(t), np.float32))
        out = net(x, tt, ms.Tensor(labels)).asnumpy()
        if lo <= t <= hi:
            uncond = net(x, tt, ms.Tensor(np.full(3, 4, np.int32))).asnumpy()
            out = uncond + w * (out - uncond)
        x = scheduler.step(ms.Tensor(out), t, x).prev_sample
    np.testing.assert_allclose(got, x.asnumpy(), atol=1e-4)
    everywhere, conditional = guided(None), guided(None, 1.0)
    assert np.abs(got - everywhere).max() > 1e-3 and np.abs(got - conditional).max() > 1e-3
    np.testing.assert_allclose(guided((0, 99)), everywhere, atol=1e-6)  # every timestep of T = 100
    np.testing.assert_allclose(guided((76, 99)), conditional, atol=1e-6)  # above every step: no guidance
    for bad in ((5, 2), (-1, 10), (1.5, 3), "0,700", (1, 2, 3)):
        with pytest.raises(ValueError, match="guidance_interval"):
            guided(bad)


def test_scale_one_is_the_conditional_model_and_zero_the_unconditional(net, scheduler):
    def guided(labels, w):
        return draw(net, scheduler, 3, labels, ClassifierFreeGuidance(w))

    labels = np.array([1, 1, 2], np.int32)
    conditional, unconditional = guided(labels, 1.0), guided(None, 1.0)
    assert np.abs(conditional - unconditional).max() > 1e-3, "the labels change the images"
    np.testing.assert_allclose(guided(labels, 0.0), unconditional, atol=1e-4)
    np.testing.assert_allclose(guided(4, 1.0), unconditional, atol=1e-5)  # label 4 = "no class"
    strong = guided(labels, 3.0)
    assert np.abs(strong - conditional).max() > 1e-3


def test_labels_follow_their_images_across_batches(net, scheduler):
    labels = np.array([3, 0, 1, 2, 2], np.int32)
    scheduler.set_timesteps(2)
    cfg = ClassifierFreeGuidance(2.0)
    whole, _ = sample(net, scheduler, (5, *SHAPE[1:]), batch_size=2, class_labels=labels, guidance=cfg, jit=False,
                      progress=False)
    for b, start in enumerate(range(0, 5, 2)):
        normal = noise_generator(0, b)  # batch b: noise stream b of the seed
        x = normal((min(2, 5 - start), *SHAPE[1:]))
        part, _ = sample_batch(net, scheduler, x, normal, labels[start:start + 2], cfg, jit=False, progress=False)
        np.testing.assert_allclose(whole[start:start + 2], part, atol=1e-6)


def test_balanced_labels():
    labels = balanced_labels(10_000, 10)
    assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [1000] * 10
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_bad_labels_are_clear_errors(net, scheduler):
    with pytest.raises(ValueError, match="unconditional"):
        draw(tiny_model("unet", image_size=8), scheduler, 2, 0)
    with pytest.raises(ValueError, match=r"0\.\.3 \(4: no class\)"):
        draw(net, scheduler, 2, 5)
    with pytest.raises(ValueError, match="one integer or 3"):
        draw(net, scheduler, 2, [0, 1])
    with pytest.raises(ValueError, match="guidance_scale"):
        ClassifierFreeGuidance(-1.0)
