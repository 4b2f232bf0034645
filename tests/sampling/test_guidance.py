"""Classifier-free guidance in the sampling loop: the guided output is uncond + w (cond - uncond),
optionally rescaled to the conditional output's spread and limited to an interval of timesteps,
w = 1 is the conditional model and w = 0 the unconditional one, labels reach the right images across batches, and bad labels are clear
errors; for each backbone."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import DDIMScheduler, balanced_labels, sample, sample_many
from ddpm_ms.sampling.loop import rescale_guidance
from tiny_models import ARCHS, tiny_model

SHAPE = (3, 1, 8, 8)


@pytest.fixture(scope="module", params=ARCHS)
def net(request):
    """A class-conditional model of each backbone (a DiT with its zero-initialised layers redrawn)."""
    return tiny_model(request.param, image_size=8, channels=1, num_classes=4)


@pytest.fixture
def scheduler():
    return DDIMScheduler(NoiseSchedule(100, "cosine"), clip_sample=False)


def x_T(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def test_guided_step_mixes_conditional_and_unconditional_outputs(net, scheduler):
    labels, w = np.array([0, 2, 3], np.int32), 2.5
    got, _ = sample(net, scheduler, SHAPE, num_inference_steps=3, x_T=x_T(), class_labels=labels, guidance_scale=w,
                    jit=False, progress=False)
    scheduler.set_timesteps(3)
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
    got, _ = sample(net, scheduler, SHAPE, num_inference_steps=3, x_T=x_T(), class_labels=labels, guidance_scale=w,
                    guidance_rescale=phi, jit=False, progress=False)
    scheduler.set_timesteps(3)
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
    plain, _ = sample(net, scheduler, SHAPE, num_inference_steps=3, x_T=x_T(), class_labels=labels, guidance_scale=w,
                      jit=False, progress=False)
    assert np.abs(plain - got).max() > 1e-3
    with pytest.raises(ValueError, match="guidance_rescale"):
        sample(net, scheduler, SHAPE, 2, class_labels=0, guidance_scale=2.0, guidance_rescale=1.5, jit=False,
               progress=False)


def test_guidance_interval_guides_only_the_steps_inside_it(net, scheduler):
    labels, w = np.array([0, 2, 3], np.int32), 3.0
    scheduler.set_timesteps(4)
    steps = [int(t) for t in scheduler.timesteps]  # 75, 50, 25, 0
    lo, hi = steps[2], steps[1]  # the middle two steps only

    def draw(interval, scale=w):
        return sample(net, scheduler, SHAPE, num_inference_steps=4, x_T=x_T(), class_labels=labels,
                      guidance_scale=scale, guidance_interval=interval, jit=False, progress=False)[0]

    got = draw((lo, hi))
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
    everywhere, conditional = draw(None), draw(None, 1.0)
    assert np.abs(got - everywhere).max() > 1e-3 and np.abs(got - conditional).max() > 1e-3
    np.testing.assert_allclose(draw((0, 99)), everywhere, atol=1e-6)  # every timestep of T = 100
    np.testing.assert_allclose(draw((76, 99)), conditional, atol=1e-6)  # above every step: no guidance
    for bad in ((5, 2), (-1, 10), (1.5, 3), "0,700", (1, 2, 3)):
        with pytest.raises(ValueError, match="guidance_interval"):
            draw(bad)


def test_scale_one_is_the_conditional_model_and_zero_the_unconditional(net, scheduler):
    def draw(labels, w):
        return sample(net, scheduler, SHAPE, num_inference_steps=3, x_T=x_T(), class_labels=labels,
                      guidance_scale=w, jit=False, progress=False)[0]

    labels = np.array([1, 1, 2], np.int32)
    conditional, unconditional = draw(labels, 1.0), draw(None, 1.0)
    assert np.abs(conditional - unconditional).max() > 1e-3, "the labels change the images"
    np.testing.assert_allclose(draw(labels, 0.0), unconditional, atol=1e-4)
    np.testing.assert_allclose(draw(4, 1.0), unconditional, atol=1e-5)  # label 4 = "no class"
    guided = draw(labels, 3.0)
    assert np.abs(guided - conditional).max() > 1e-3


def test_labels_follow_their_images_across_batches(net, scheduler):
    labels = np.array([3, 0, 1, 2, 2], np.int32)
    whole, _ = sample_many(net, scheduler, 5, SHAPE[1:], batch_size=2, num_inference_steps=2, class_labels=labels,
                           guidance_scale=2.0, jit=False, progress=False)
    for b, start in enumerate(range(0, 5, 2)):
        part, _ = sample(net, scheduler, (min(2, 5 - start), *SHAPE[1:]), num_inference_steps=2, stream=b,
                         class_labels=labels[start:start + 2], guidance_scale=2.0, jit=False, progress=False)
        np.testing.assert_allclose(whole[start:start + 2], part, atol=1e-6)


def test_balanced_labels():
    labels = balanced_labels(10_000, 10)
    assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [1000] * 10
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_bad_labels_are_clear_errors(net, scheduler):
    with pytest.raises(ValueError, match="unconditional"):
        sample(tiny_model("unet", image_size=8), scheduler, SHAPE, 2, class_labels=0,
               jit=False, progress=False)
    with pytest.raises(ValueError, match=r"0\.\.3 \(4: no class\)"):
        sample(net, scheduler, SHAPE, 2, class_labels=5, jit=False, progress=False)
    with pytest.raises(ValueError, match="one integer or 3"):
        sample(net, scheduler, SHAPE, 2, class_labels=[0, 1], jit=False, progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        sample(net, scheduler, SHAPE, 2, class_labels=0, guidance_scale=-1.0, jit=False, progress=False)
