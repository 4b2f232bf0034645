"""DDPM sampler: exact against an analytic denoiser, reproducible, and a step checked by hand."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import DDPMScheduler, sample


@pytest.mark.parametrize("schedule,variance,steps,std_rel", [
    ("linear", "fixed_small", None, 0.03),
    ("cosine", "fixed_small", None, 0.03),
    ("linear", "fixed_large", None, 0.03),
    # A respaced chain discretises coarser; fixed-small then loses a few percent of the spread.
    ("cosine", "fixed_small", 250, 0.06),
])
def test_sampler_reproduces_gaussian_data(schedule, variance, steps, std_rel, oracle):
    mu, s = 0.3, 0.2
    sched = NoiseSchedule(1000, schedule)
    scheduler = DDPMScheduler(sched, variance_type=variance, clip_sample=False)
    if steps:
        scheduler.set_timesteps(steps)
    images, _ = sample(oracle(sched, mu, s), scheduler, (4096, 1, 4, 4), seed=3, progress=False)
    assert images.mean() == pytest.approx(mu, abs=0.005)
    assert images.std() == pytest.approx(s, rel=std_rel)


def test_a_wrong_denoiser_is_caught(oracle):
    # The same check must fail when the sampler is fed a denoiser for other data.
    sched = NoiseSchedule(1000, "cosine")
    scheduler = DDPMScheduler(sched, clip_sample=False)
    scheduler.set_timesteps(100)
    images, _ = sample(oracle(sched, 0.3, 0.5), scheduler, (2048, 1, 4, 4), seed=3, progress=False)
    assert abs(images.std() - 0.2) > 0.1


def test_step_matches_posterior_formula(rng):
    sched = NoiseSchedule(100, "linear")
    scheduler = DDPMScheduler(sched, clip_sample=False)
    x = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    eps = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    z = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    t = 40
    out = scheduler.step(ms.Tensor(eps), t, ms.Tensor(x), noise=ms.Tensor(z))
    ab, ab_prev, beta = sched.alphas_cumprod[t], sched.alphas_cumprod[t - 1], sched.betas[t]
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    mean = np.sqrt(ab_prev) * beta / (1 - ab) * x0 + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
    want = mean + np.sqrt(sched.posterior_variance[t]) * z
    np.testing.assert_allclose(out.pred_original_sample.asnumpy(), x0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.prev_sample.asnumpy(), want, rtol=1e-4, atol=1e-5)


def test_clipping_bounds_predicted_x0_and_the_step_uses_the_clipped_value():
    sched = NoiseSchedule(100, "linear")
    scheduler = DDPMScheduler(sched, clip_sample=True)
    x = np.ones((1, 1, 2, 2), np.float32)
    out = scheduler.step(ms.Tensor(np.full((1, 1, 2, 2), -50.0, np.float32)), 99, ms.Tensor(x),
                         noise=ms.Tensor(np.zeros((1, 1, 2, 2), np.float32)))
    # unclipped, x0 = (1 + 50 sqrt(1 - ab)) / sqrt(ab) lies far above 1: clipped, it is exactly 1
    np.testing.assert_array_equal(out.pred_original_sample.asnumpy(), np.ones_like(x))
    ab, ab_prev, beta = sched.alphas_cumprod[99], sched.alphas_cumprod[98], sched.betas[99]
    mean = np.sqrt(ab_prev) * beta / (1 - ab) * 1.0 + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
    np.testing.assert_allclose(out.prev_sample.asnumpy(), mean, rtol=1e-5)  # the posterior mean from x0 = 1


def test_set_timesteps_spacing():
    scheduler = DDPMScheduler(NoiseSchedule(1000, "cosine"))
    assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 0 and len(scheduler.timesteps) == 1000
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [750, 500, 250, 0]  # leading, the default
    assert scheduler.previous_timestep(750) == 500 and scheduler.previous_timestep(0) == -1
    trailing = DDPMScheduler(NoiseSchedule(1000, "cosine"), timestep_spacing="trailing")
    trailing.set_timesteps(4)
    assert trailing.timesteps.tolist() == [999, 749, 499, 249]
    assert trailing.previous_timestep(249) == -1
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(0)


def test_add_noise_matches_forward_process(rng):
    sched = NoiseSchedule(100, "linear")
    x0 = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    eps = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    t = np.array([0, 50, 99])
    got = DDPMScheduler(sched).add_noise(ms.Tensor(x0), ms.Tensor(eps), t).asnumpy()
    a = sched.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(got, a * x0 + np.sqrt(1 - a ** 2) * eps, rtol=1e-5, atol=1e-6)


def test_seeded_sampling_is_reproducible_and_returns_trajectory(oracle):
    sched = NoiseSchedule(100, "cosine")
    denoiser = oracle(sched, 0.0, 0.5)
    steps = DDPMScheduler(sched)
    steps.set_timesteps(20)
    kwargs = dict(trajectory_every=5, progress=False)
    a, traj = sample(denoiser, steps, (2, 1, 4, 4), seed=7, **kwargs)
    b, _ = sample(denoiser, steps, (2, 1, 4, 4), seed=7, **kwargs)
    c, _ = sample(denoiser, steps, (2, 1, 4, 4), seed=8, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # the noise at the first timestep (95 on the leading grid), then x after every 5th step, labelled
    # in the paper's 1-based counting
    assert [f.t for f in traj] == [96] + [int(t) + 1 for t in steps.timesteps[5::5]] + [0]
    np.testing.assert_array_equal(traj[-1].sample, a)
    assert traj[0].sample.std() == pytest.approx(1.0, abs=0.5)  # starts from noise
    assert traj[0].pred_x0 is None and all(f.pred_x0.shape == a.shape for f in traj[1:])
    # The last step (to alpha-bar = 1) returns the x0 estimate itself.
    np.testing.assert_allclose(traj[-1].pred_x0, a, atol=1e-6)


@pytest.mark.parametrize("objective", ["x0", "v"])
def test_other_prediction_types_recover_x0(objective, rng):
    sched = NoiseSchedule(100, "linear")
    x0 = rng.uniform(-1, 1, (2, 1, 2, 2)).astype(np.float32)
    eps = rng.standard_normal((2, 1, 2, 2)).astype(np.float32)
    t = 60
    a, s = sched.sqrt_alphas_cumprod[t], sched.sqrt_one_minus_alphas_cumprod[t]
    xt = a * x0 + s * eps
    out = x0 if objective == "x0" else a * eps - s * x0
    scheduler = DDPMScheduler(sched, prediction_type=objective, clip_sample=False)
    got = scheduler.predict_x0(ms.Tensor(out.astype(np.float32)), t, ms.Tensor(xt.astype(np.float32)))
    np.testing.assert_allclose(got.asnumpy(), x0, rtol=1e-4, atol=1e-5)
