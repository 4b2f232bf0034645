"""Image-to-image and inpainting: strength 1 is plain sampling and 0 the image itself, a strength in
between starts where diffusers' img2img starts; inpainting keeps the known pixels exactly and fills the
rest with the data's statistics, RePaint's resampling jumps included; bad inputs are clear errors."""
import numpy as np
import pytest

from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.sampling import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, Img2Img, Inpaint,
                              noise_generator, sample, sample_batch)
from PIL import Image

from ddpm_ms.images import open_image
from ddpm_ms.sampling.editing import img2img_start, read_image, repaint_path

MU, STD = -0.4, 0.3
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(1000, "cosine")


def picture(shape=(1, 8, 8), seed=3):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def half_mask(shape=(1, 8, 8)):
    mask = np.zeros(shape, np.float32)
    mask[..., :, 4:] = 1  # repaint the right half
    return mask


def stepped(scheduler, steps=10):
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_strength_one_is_plain_sampling_and_zero_the_image(name, oracle, schedule):
    model, scheduler = oracle(schedule, MU, STD), stepped(SCHEDULERS[name](schedule))
    plain, _ = sample(model, scheduler, (3, 1, 8, 8), progress=False)
    full, _ = sample(model, scheduler, (3, 1, 8, 8), progress=False, edit=Img2Img(picture(), strength=1.0))
    none, frames = sample(model, scheduler, (3, 1, 8, 8), progress=False, edit=Img2Img(picture(), strength=0.0),
                          trajectory_every=1)
    np.testing.assert_array_equal(full, plain)
    np.testing.assert_array_equal(none, np.broadcast_to(picture(), (3, 1, 8, 8)))
    assert [f.t for f in frames] == [0]


def test_the_chain_starts_where_diffusers_img2img_starts(oracle, schedule):
    """Of n steps the last int(n * strength) run, from the image noised to the first of them with the
    noise plain sampling would have started from."""
    assert [img2img_start(20, s) for s in (0.0, 0.05, 0.3, 0.5, 0.99, 1.0)] == [20, 19, 14, 10, 1, 0]
    assert img2img_start(4, 0.3) == img2img_start(4, 0.4) == 3  # int() rounds down, as diffusers does
    model, scheduler = oracle(schedule, MU, STD), stepped(DDIMScheduler(schedule))
    _, plain = sample(model, scheduler, (2, 1, 8, 8), progress=False, trajectory_every=1)
    grid = scheduler.timesteps.copy()
    out, frames = sample(model, scheduler, (2, 1, 8, 8), progress=False, edit=Img2Img(picture(), strength=0.35),
                         trajectory_every=1)
    first = int(grid[10 - 3])
    assert [f.t for f in frames] == [int(t) + 1 for t in grid[-3:]] + [0]
    ab = float(schedule.alphas_cumprod[first])
    np.testing.assert_allclose(frames[0].sample, np.sqrt(ab) * picture() + np.sqrt(1 - ab) * plain[0].sample,
                               rtol=1e-5, atol=1e-6)
    assert np.abs(out - picture()).mean() < np.abs(plain[-1].sample - picture()).mean() / 2  # it stays close
    np.testing.assert_array_equal(scheduler.timesteps, grid)  # the grid is the caller's again
    batched, _ = sample(model, scheduler, (4, 1, 8, 8), batch_size=2, edit=Img2Img(picture(), 0.35), progress=False)
    normal = noise_generator(0, 1)  # the second batch's noise stream
    second, _ = sample_batch(model, scheduler, normal((2, 1, 8, 8)), normal, edit=Img2Img(picture(), 0.35),
                             progress=False)
    np.testing.assert_array_equal(batched[2:], second)  # every batch starts where the first did


def test_repaint_path_climbs_back_jump_length_steps_jump_n_sample_minus_one_times():
    assert repaint_path(6) == list(range(7))
    assert repaint_path(6, jump_length=2, jump_n_sample=2) == [0, 1, 2, 1, 0, 1, 2, 3, 4, 3, 2, 3, 4, 5, 6]
    path = repaint_path(20, jump_length=5, jump_n_sample=3)
    assert path[0] == 0 and path[-1] == 20 and all(abs(b - a) == 1 for a, b in zip(path, path[1:]))
    assert sum(b > a for a, b in zip(path, path[1:])) == 20 + 3 * 2 * 5  # 3 jump points, 2 more passes of 5 steps
    with pytest.raises(ValueError, match="jump_length must be a positive integer"):
        repaint_path(10, 0, 2)


@pytest.mark.parametrize("name,jumps", [("ddpm", 1), ("ddpm", 3), ("ddim", 1), ("ddim", 3), ("dpm++", 1)])
def test_inpainting_keeps_the_known_pixels_and_fills_the_rest_as_plain_sampling_would(name, jumps, oracle, schedule):
    """The oracle's pixels are independent, so the repainted half should have the statistics of plain
    samples from the same sampler (a 20-step grid under-disperses a little: std 0.24-0.27 for 0.3)."""
    model = oracle(schedule, MU, STD)
    scheduler = stepped(DDIMScheduler(schedule, eta=1.0) if name == "ddim" else SCHEDULERS[name](schedule), 20)
    inpaint = Inpaint(picture(), half_mask(), jump_length=4, jump_n_sample=jumps)
    images, _ = sample(model, scheduler, (256, 1, 8, 8), batch_size=128, edit=inpaint, progress=False)
    plain, _ = sample(model, scheduler, (256, 1, 8, 8), batch_size=128, seed=1, progress=False)
    np.testing.assert_array_equal(images[..., :4], np.broadcast_to(picture()[..., :4], (256, 1, 8, 4)))
    filled = images[..., 4:]
    assert abs(filled.mean() - MU) < 0.02
    assert abs(filled.std() / plain.std() - 1) < 0.04


def test_a_mask_per_image_and_a_three_channel_image(oracle, schedule):
    model, scheduler = oracle(schedule, MU, STD), stepped(DDIMScheduler(schedule))
    image = picture((3, 8, 8))
    masks = np.stack([half_mask(), 1 - half_mask()])  # image 0 keeps its left half, image 1 its right half
    out, _ = sample(model, scheduler, (2, 3, 8, 8), progress=False, edit=Inpaint(image, masks))
    np.testing.assert_array_equal(out[0, :, :, :4], image[:, :, :4])
    np.testing.assert_array_equal(out[1, :, :, 4:], image[:, :, 4:])
    assert np.abs(out[0, :, :, 4:] - image[:, :, 4:]).min() > 0


def test_bad_editing_inputs_are_clear_errors(oracle, schedule):
    model = oracle(schedule, MU, STD)
    run = lambda edit, scheduler=None: sample(model, stepped(scheduler or DDIMScheduler(schedule)),  # noqa: E731
                                              (2, 1, 8, 8), progress=False, edit=edit)
    with pytest.raises(ValueError, match="pass the image too"):
        Inpaint(None, half_mask())
    with pytest.raises(ValueError, match="starts from an image"):
        Img2Img(None, 0.5)
    with pytest.raises(ValueError, match="strength must be in \\[0, 1\\]"):
        Img2Img(picture(), strength=1.5)
    with pytest.raises(ValueError, match="jump_length must be a positive integer"):
        Inpaint(picture(), half_mask(), jump_length=0)
    with pytest.raises(ValueError, match="the image has shape \\(1, 6, 6\\); expected \\(1, 8, 8\\)"):
        run(Img2Img(picture((1, 6, 6))))
    with pytest.raises(ValueError, match="the image has 1 channel\\(s\\); the model makes 3"):
        sample(model, stepped(DDIMScheduler(schedule)), (2, 3, 8, 8), progress=False, edit=Img2Img(picture()))
    with pytest.raises(ValueError, match="the mask has shape"):
        run(Inpaint(picture(), np.zeros((8, 8))))
    with pytest.raises(ValueError, match="NaN"):
        run(Img2Img(np.full((1, 8, 8), np.nan, np.float32)))
    with pytest.raises(ValueError, match="with jumps using the ddpm or ddim sampler"):
        run(Inpaint(picture(), half_mask(), jump_length=2, jump_n_sample=2), DPMSolverMultistepScheduler(schedule))


def test_user_images_are_read_in_the_models_shape_and_range(tmp_path):
    from PIL import Image

    from ddpm_ms.sampling.editing import read_image

    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luma 0.299
    Image.fromarray(rgb).save(tmp_path / "red.png")
    grey = read_image(tmp_path / "red.png", (1, 8, 8))
    assert grey.shape == (1, 8, 8) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 2 * 76 / 255 - 1, atol=1e-6)  # PIL's L of pure red is 76
    colour = read_image(Image.fromarray(rgb), (3, 8, 8))
    np.testing.assert_allclose(colour[:, 0, 0], [1, -1, -1])
    np.testing.assert_allclose(read_image(np.full((8, 8), 0.5), (3, 8, 8)), 0.0)  # floats in [0, 1], grey to RGB
    np.testing.assert_allclose(read_image(np.full((8, 8, 3), 255, np.uint8), (1, 8, 8)), 1.0, atol=1e-6)
    mask = read_image(np.array([[0, 100], [200, 255]], np.uint8), (1, 2, 2), "mask")
    np.testing.assert_array_equal(mask, [[[0, 0], [1, 1]]])  # white (>= half) repaints
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png is not an image PIL can read"):
        read_image(tmp_path / "notes.png", (1, 8, 8))
    with pytest.raises(FileNotFoundError, match="image file .*nowhere.png does not exist"):
        read_image(tmp_path / "nowhere.png", (1, 8, 8))
    with pytest.raises(ValueError, match="this model makes 8x8 images \\(files and PIL images are resized, arrays"):
        read_image(np.zeros((6, 6)), (1, 8, 8))
    with pytest.raises(ValueError, match="uint8 values or floats in \\[0, 1\\]"):
        read_image(np.full((8, 8), 3.0), (1, 8, 8))


# -- one image reader for every mode a file or PIL image comes in -----------------------------------
def _saved(tmp_path, image, name="in.png", **save):
    path = tmp_path / name
    image.save(path, **save)
    return path


def test_a_16_bit_grey_file_is_scaled_from_its_full_range_not_clipped(tmp_path):
    values = np.array([[0, 16384, 32768, 65535]], np.uint16)
    path = _saved(tmp_path, Image.fromarray(values))
    got = read_image(path, (1, 1, 4))  # same size: no resampling
    np.testing.assert_allclose(got, np.round(values / 65535 * 255)[None] / 255 * 2 - 1, atol=1e-6)


def test_transparency_is_composited_onto_black(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 255, 0, 128], [255, 255, 255, 255]]], np.uint8)
    got = read_image(_saved(tmp_path, Image.fromarray(rgba, "RGBA")), (3, 1, 4))
    want = np.array([[255, 0, 0], [0, 0, 0], [0, 128, 0], [255, 255, 255]], np.float32).T[:, None] / 255 * 2 - 1
    np.testing.assert_allclose(got, want, atol=1 / 255 * 2 + 1e-6)
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0  # colour 0 is see-through: black, not white
    got = read_image(_saved(tmp_path, palette, "p.png", transparency=0), (3, 1, 2))
    np.testing.assert_allclose(got[:, 0, 0], [-1, -1, -1], atol=1e-6)
    np.testing.assert_allclose(got[:, 0, 1], np.array([10, 20, 30]) / 255 * 2 - 1, atol=1e-6)


def test_cmyk_and_grey_targets(tmp_path):
    cmyk = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0]]], np.uint8), "CMYK")
    got = read_image(_saved(tmp_path, cmyk, "c.jpg", quality=100), (3, 1, 3))
    np.testing.assert_allclose(got[:, 0, 0], [1, 1, 1], atol=0.05)     # no ink: white
    np.testing.assert_allclose(got[:, 0, 1], [-1, -1, -1], atol=0.05)  # full black: black
    assert got[0, 0, 2] < -0.8 and got[1, 0, 2] > 0.8 and got[2, 0, 2] > 0.8  # cyan
    grey = read_image(Image.fromarray(np.array([[[255, 0, 0]]], np.uint8), "RGB"), (1, 1, 1))
    np.testing.assert_allclose(grey, [[[round(255 * 0.299) / 255 * 2 - 1]]], atol=1 / 255 + 1e-6)


def test_exif_orientation_turns_the_photo_upright(tmp_path):
    pixels = np.zeros((2, 3), np.uint8)
    pixels[0, 0] = 255  # the top-left pixel as stored
    image = Image.fromarray(pixels, "L")
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: the stored image is to be turned 90 degrees clockwise
    got = read_image(_saved(tmp_path, image, "o.png", exif=exif), (1, 3, 2))
    assert got.shape == (1, 3, 2)
    assert got[0, 0, 1] == 1 and (got > 0).sum() == 1  # top-left moved to the top-right


def test_a_huge_file_is_one_line_before_it_is_decoded(tmp_path):
    path = _saved(tmp_path, Image.new("L", (100, 100)))
    with pytest.raises(ValueError, match=r"100x100 pixels, more than the 5,000 this reader decodes; scale it down"):
        open_image(path, max_pixels=5_000)
