"""Loss guidance against the analytic Gaussian denoiser: colour guidance moves the samples' mean toward
its target, linearly at small scales and never past it; scale 0 is the unguided sampler bit for bit and
a small scale differs from it as the first-order prediction says; both gradients (through the x0 formula,
through the model) equal their closed forms; compiled equals eager; it combines with classifier-free
guidance and keeps to its interval."""
import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import ClassifierFreeGuidance, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, sample
from ddpm_ms.sampling.loss_guidance import (ColorGuidance, LossGuidance, color_loss, move_through_model,
                                            move_through_x0, parse_color)
from tiny_models import ARCHS, tiny_model

MU, STD = -0.4, 0.3  # the oracle's data: every pixel N(-0.4, 0.3^2), about Fashion-MNIST's mean brightness
SCHEDULERS = {"ddpm": lambda s: DDPMScheduler(s), "ddim": lambda s: DDIMScheduler(s),
              "dpm++": lambda s: DPMSolverMultistepScheduler(s)}
STEPS = {"ddpm": 50, "ddim": 20, "dpm++": 20}


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(1000, "cosine")


def draw(oracle, schedule, name, shape=(16, 1, 28, 28), **kwargs):
    model, scheduler = oracle(schedule, MU, STD), SCHEDULERS[name](schedule)
    scheduler.set_timesteps(STEPS[name])
    images, _ = sample(model, scheduler, shape, progress=False, **kwargs)
    return images


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("through_model", [False, True])
def test_scale_zero_is_the_unguided_sampler_bit_for_bit(name, through_model, oracle, schedule):
    plain = draw(oracle, schedule, name, shape=(4, 1, 8, 8))
    off = draw(oracle, schedule, name, shape=(4, 1, 8, 8),
               guidance=ColorGuidance((1, 0, 0), 0.0, through_model=through_model))
    np.testing.assert_array_equal(off, plain)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("through_model", [False, True])
@pytest.mark.parametrize("rgb", [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)], ids=["white", "black"])
def test_colour_guidance_moves_the_mean_toward_the_target_linearly_and_never_past_it(name, through_model, rgb,
                                                                                     oracle, schedule):
    target = 2 * rgb[0] - 1  # a grey's brightness in [-1, 1]
    scales = [0.0, 1e-3, 1e-2, 0.1, 1.0, 5.0, 20.0, 40.0, 100.0, 400.0]
    means = np.array([draw(oracle, schedule, name, guidance=ColorGuidance(rgb, s, through_model=through_model)).mean()
                      for s in scales])
    toward = np.sign(target - means[0])
    gained = toward * (means - means[0])  # progress toward the target
    assert abs(means[0] - MU) < 0.03
    assert np.all(toward * (target - means) >= 0), f"a scale pushed the mean past {target}: {means}"
    assert np.all(np.diff(gained[:8]) > 0), f"the mean does not move steadily toward {target}: {means}"
    assert gained[-1] > 0.5 * abs(target - MU)  # strong guidance gets most of the way
    per_unit = gained[1:4] / np.array(scales[1:4])
    np.testing.assert_allclose(per_unit, per_unit[-1], rtol=0.05)  # linear at small scales


def test_a_small_scale_moves_the_samples_as_the_first_order_prediction_says(oracle, schedule):
    """DDIM (eta 0) with the Gaussian oracle maps x_t to x_prev by x_prev = A_t x_t + b_t. Colour guidance
    toward white moves every pixel below it by scale * sqrt(ab) * d loss / d x_t = scale / N before each
    step (loss = mean |x0 - 1|, dx0/dx_t = 1/sqrt(ab)); that step keeps the model output it had, so the
    move reaches x_prev times a_prev / a_t, and the final images by (scale / N) sum_k (a_prev / a)_k prod_{j>k} A_j."""
    scheduler = DDIMScheduler(schedule, clip_sample=False)
    scheduler.set_timesteps(20)
    shape, scale = (4, 1, 8, 8), 1e-3
    model = oracle(schedule, MU, STD)
    plain, _ = sample(model, scheduler, shape, progress=False)
    guided, _ = sample(model, scheduler, shape, progress=False, guidance=ColorGuidance((1, 1, 1), scale))
    ab = lambda t: 1.0 if t < 0 else float(schedule.alphas_cumprod[t])  # noqa: E731
    grid = [int(t) for t in scheduler.timesteps]
    gains, moved = [], []
    for t, prev in zip(grid, grid[1:] + [-1]):
        a, s, a_p, s_p = np.sqrt(ab(t)), np.sqrt(1 - ab(t)), np.sqrt(ab(prev)), np.sqrt(1 - ab(prev))
        kappa = s / (ab(t) * STD ** 2 + 1 - ab(t))  # the oracle: eps = kappa (x - a mu)
        gains.append(a_p * (1 - s * kappa) / a + s_p * kappa)  # A_t: x_prev = a_p x0 + s_p eps
        moved.append(a_p / a)  # x_prev = a_p (x_moved - s eps) / a + s_p eps, eps fixed
    predicted = scale / 64 * sum(moved[k] * np.prod(gains[k + 1:]) for k in range(len(grid)))
    assert np.all(plain < 1)
    np.testing.assert_allclose(guided - plain, predicted, rtol=2e-3, atol=2e-7)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_gradient_through_the_x0_formula_is_the_closed_form(prediction, channels, rng):
    x = rng.standard_normal((3, channels, 5, 4)).astype(np.float32)
    out = rng.standard_normal(x.shape).astype(np.float32)
    a, s, scale, rgb = 0.6, 0.8, 7.0, (0.9, 0.2, 0.4)
    move = move_through_x0([ColorGuidance(rgb, scale)], prediction, jit=False)
    moved = move(ms.Tensor(x), ms.Tensor(out), ms.Tensor(a, ms.float32), ms.Tensor(s, ms.float32),
                 ms.Tensor([scale], ms.float32), (ms.Tensor(np.array(rgb, np.float32) * 2 - 1),)).asnumpy()
    x0 = (x - s * out) / a if prediction == "eps" else a * x - s * out
    dx0_dx = 1 / a if prediction == "eps" else a
    goal = np.array(rgb) * 2 - 1 if channels == 3 else np.array([0.299, 0.587, 0.114]) @ (np.array(rgb) * 2 - 1)
    grad_x0 = np.sign(x0 - np.reshape(goal, (1, -1, 1, 1))) / (channels * 5 * 4)  # d mean|x0 - c| / d x0, per image
    np.testing.assert_allclose(moved, x - scale * a * dx0_dx * grad_x0, rtol=1e-5, atol=1e-6)


def test_any_differentiable_loss_can_guide(rng):
    """A user's loss (half the squared distance to a picture, per image, added up) through the x0 formula:
    the move is scale * (x0 - picture) for an eps model."""
    def half_squared_distance(x0, target):
        return 0.5 * ((x0 - target) ** 2).sum()

    picture = rng.uniform(-1, 1, (1, 1, 4, 4)).astype(np.float32)
    loss = LossGuidance(half_squared_distance, scale=0.3, context=picture)
    x, out = (rng.standard_normal((2, 1, 4, 4)).astype(np.float32) for _ in range(2))
    a, s = 0.8, 0.6
    moved = move_through_x0([loss], "eps", jit=True)(ms.Tensor(x), ms.Tensor(out), ms.Tensor(a, ms.float32),
                                                     ms.Tensor(s, ms.float32), ms.Tensor([0.3], ms.float32),
                                                     ms.mutable((loss.context,))).asnumpy()
    np.testing.assert_allclose(moved, x - 0.3 * ((x - s * out) / a - picture), rtol=1e-5, atol=1e-6)


def test_the_gradient_through_the_model_includes_the_denoisers_jacobian(oracle, schedule, rng):
    """With the oracle, eps = kappa (x - a mu), so x0_hat = (x - s kappa (x - a mu)) / a and
    d x0_hat / d x = (1 - s kappa) / a: the move is scale (1 - s kappa) d loss / d x0_hat."""
    model, t, scale = oracle(schedule, MU, STD), 300, 5.0
    ab = float(schedule.alphas_cumprod[t])
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    kappa = s / (ab * STD ** 2 + 1 - ab)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    move = move_through_model(model, [ColorGuidance((1, 1, 1), scale)], "eps", "unconditional", jit=True)
    moved, output = move(ms.Tensor(x), ms.Tensor(np.full(2, t, np.float32)), ms.Tensor(a, ms.float32),
                         ms.Tensor(s, ms.float32), ms.Tensor([scale], ms.float32), ms.mutable((ms.Tensor([1., 1, 1]),)))
    np.testing.assert_allclose(output.asnumpy(), kappa * (x - a * MU), rtol=1e-5, atol=1e-6)
    x0 = (x - s * kappa * (x - a * MU)) / a
    np.testing.assert_allclose(moved.asnumpy(), x - scale * (1 - s * kappa) * np.sign(x0 - 1) / 16, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("through_model", [False, True])
def test_compiled_equals_eager_with_classifier_free_guidance(arch, through_model):
    model = tiny_model(arch, image_size=8, channels=3, num_classes=3)
    x_T = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cfg = ClassifierFreeGuidance(2.0, rescale=0.5)
    common = dict(x_T=x_T, class_labels=[0, 2], progress=False)
    guidance = [cfg, ColorGuidance("#ff8000", 20.0, through_model=through_model)]
    scheduler = DPMSolverMultistepScheduler(NoiseSchedule(100, "cosine"))
    scheduler.set_timesteps(4)
    eager, _ = sample(model, scheduler, x_T.shape, jit=False, guidance=guidance, **common)
    compiled, _ = sample(model, scheduler, x_T.shape, jit=True, guidance=guidance, **common)
    unguided, _ = sample(model, scheduler, x_T.shape, jit=True, guidance=cfg, **common)
    np.testing.assert_allclose(compiled, eager, atol=2e-5)
    assert np.abs(compiled - unguided).max() > 0.05


@pytest.mark.parametrize("arch", ARCHS)
def test_colour_guidance_moves_the_classifier_free_guided_output(arch):
    """The loop's colour-guided, CFG-guided DDIM chain equals one written out by hand: model twice,
    uncond + w (cond - uncond), x moved by scale * sign(x0 - c) / N (eps model), DDIM step."""
    model = tiny_model(arch, image_size=8, channels=1, num_classes=3)
    scheduler = DDIMScheduler(NoiseSchedule(100, "cosine"), clip_sample=False)
    x_T = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    labels, w, scale = np.array([1, 2], np.int32), 3.0, 10.0
    scheduler.set_timesteps(3)
    got, _ = sample(model, scheduler, x_T.shape, x_T=x_T, class_labels=labels, jit=False,
                    guidance=[ClassifierFreeGuidance(w), ColorGuidance((0.2, 0.2, 0.2), scale)], progress=False)
    x = x_T
    for t in scheduler.timesteps:
        tt = ms.Tensor(np.full(2, float(t), np.float32))
        cond = model(ms.Tensor(x), tt, ms.Tensor(labels)).asnumpy()
        uncond = model(ms.Tensor(x), tt, ms.Tensor(np.full(2, 3, np.int32))).asnumpy()
        out = uncond + w * (cond - uncond)
        ab = float(scheduler.schedule.alphas_cumprod[t])
        x0 = (x - np.sqrt(1 - ab) * out) / np.sqrt(ab)
        x = x - scale * np.sign(x0 - (2 * 0.2 - 1)) / 64
        x = scheduler.step(ms.Tensor(out), int(t), ms.Tensor(x.astype(np.float32))).prev_sample.asnumpy()
    np.testing.assert_allclose(got, x, atol=1e-4)


def test_guidance_keeps_to_its_interval(oracle, schedule):
    plain = draw(oracle, schedule, "ddim", shape=(4, 1, 8, 8))
    everywhere = draw(oracle, schedule, "ddim", shape=(4, 1, 8, 8), guidance=ColorGuidance((1, 1, 1), 5.0))
    nowhere = draw(oracle, schedule, "ddim", shape=(4, 1, 8, 8),
                   guidance=ColorGuidance((1, 1, 1), 5.0, interval=(1, 49)))  # the grid is 950, 900, ..., 0
    late = draw(oracle, schedule, "ddim", shape=(4, 1, 8, 8), guidance=ColorGuidance((1, 1, 1), 5.0,
                                                                                     interval=(0, 500)))
    np.testing.assert_array_equal(nowhere, plain)
    assert 0 < (late - plain).mean() < (everywhere - plain).mean()


def test_two_terms_add_up(oracle, schedule):
    one = draw(oracle, schedule, "ddim", shape=(2, 1, 8, 8), guidance=ColorGuidance((1, 1, 1), 2.0))
    halves = draw(oracle, schedule, "ddim", shape=(2, 1, 8, 8),
                  guidance=[ColorGuidance((1, 1, 1), 1.0), ColorGuidance((1, 1, 1), 1.0)])
    np.testing.assert_allclose(halves, one, atol=1e-5)


def test_colour_loss_is_per_image_and_reads_brightness_on_one_channel():
    x0 = np.zeros((2, 1, 2, 2), np.float32)
    x0[1] = 1.0
    target = ms.Tensor(np.array([1.0, 1.0, 1.0], np.float32))
    assert float(color_loss(ms.Tensor(x0), target).asnumpy()) == pytest.approx(1.0)  # image 0: 1, image 1: 0
    rgb = ms.Tensor(np.array([1.0, -1.0, -1.0], np.float32))  # pure red: luma 0.299 -> -0.402 in [-1, 1]
    assert float(color_loss(ms.Tensor(np.zeros((1, 1, 2, 2), np.float32)), rgb).asnumpy()) == pytest.approx(0.402)


def test_colours_are_read_in_the_forms_people_write_them():
    assert parse_color("#ff8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert parse_color("#f80") == pytest.approx((1.0, 136 / 255, 0.0))
    assert parse_color("255,128,0") == pytest.approx((1.0, 128 / 255, 0.0))
    assert parse_color("rgba(255, 128, 0, 1)") == pytest.approx((1.0, 128 / 255, 0.0))
    assert parse_color("0.1,0.9,0.5") == pytest.approx((0.1, 0.9, 0.5))
    assert parse_color((0.1, 0.9, 0.5)) == pytest.approx((0.1, 0.9, 0.5))
    for bad in ("#ggg", "300,0,0", "red", "1,2"):
        with pytest.raises(ValueError, match="is not R,G,B"):
            parse_color(bad)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        parse_color((2, 0, 0))


def test_bad_guidance_is_a_clear_error(oracle, schedule):
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        ColorGuidance((1, 1, 1), -1)
    with pytest.raises(TypeError, match="guidance takes ClassifierFreeGuidance and LossGuidance pieces"):
        draw(oracle, schedule, "ddim", shape=(1, 1, 4, 4), guidance=[lambda x0, c: x0.sum()])
    with pytest.raises(ValueError, match="one ClassifierFreeGuidance"):
        draw(oracle, schedule, "ddim", shape=(1, 1, 4, 4),
             guidance=[ClassifierFreeGuidance(2), ClassifierFreeGuidance(3)])
    x0_model, x0_scheduler = oracle(schedule, MU, STD, prediction="x0"), DDIMScheduler(schedule, prediction_type="x0")
    x0_scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="guide through the model"):
        sample(x0_model, x0_scheduler, (1, 1, 4, 4), progress=False, guidance=ColorGuidance((1, 1, 1), 1.0))
    guided, _ = sample(x0_model, x0_scheduler, (1, 1, 4, 4), progress=False,
                       guidance=ColorGuidance((1, 1, 1), 20.0, through_model=True))
    plain, _ = sample(x0_model, x0_scheduler, (1, 1, 4, 4), progress=False)
    assert guided.mean() > plain.mean() + 0.05  # through the model, an x0-predicting model is steered
