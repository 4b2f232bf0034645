"""The sampling command line: every output it promises, and one clear line for bad arguments."""
import json

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from ddpm_ms.cli.sample import main
from ddpm_ms.config import Config, DataConfig, DiffusionConfig, TrainConfig
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.checkpoint import save_checkpoint


def make_run(path, timesteps=40, dim=8, num_classes=0):
    cfg = Config(preset="tiny", model=UNetConfig(image_size=(8, 8), channels=1, dim=dim, dim_mults=(1, 2),
                                                  num_classes=num_classes),
                 diffusion=DiffusionConfig(timesteps=timesteps), data=DataConfig(), train=TrainConfig(sample_steps=10))
    path.mkdir(parents=True)
    cfg.save(path / "config.json")
    ms.set_seed(0)
    net = UNet(cfg.model)
    if num_classes:  # labels that matter: an untrained embedding is too small to change saturated images
        table = next(p for p in net.trainable_params() if "class_emb" in p.name)
        table.set_data(ms.Tensor(np.random.default_rng(0).normal(0, 1, table.shape).astype(np.float32)))
    save_checkpoint(net, path / "checkpoints" / "final.ckpt", {"step": 1, "epoch": 0})
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "tiny")


def sample_cli(*argv):
    return main([*map(str, argv), "--device", "CPU", "--mode", "pynative", "--no-progress"])


def test_every_output_is_written(run_dir, tmp_path, capsys):
    code = sample_cli("--run", run_dir, "--sampler", "ddim", "--steps", 6, "--num", 5, "--batch-size", 2,
                      "--out", tmp_path / "grid.png", "--nrow", 5, "--save-dir", tmp_path / "pngs",
                      "--npz", tmp_path / "all.npz", "--gif", tmp_path / "d.gif", "--gif-every", 2, "--gif-x0")
    assert code == 0, capsys.readouterr().err
    with Image.open(tmp_path / "grid.png") as im:  # 5 tiles of 8 px enlarged to 64, in one row
        assert im.size == (5 * 64 + 6 * 2, 64 + 2 * 2) and im.mode == "L"
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == [f"ddim-6steps-seed0_{i:05d}.png" for i in range(5)]
    with np.load(tmp_path / "all.npz") as f:
        arr = f["arr_0"]
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[3])), arr[3, ..., 0])
    with Image.open(tmp_path / "d.gif") as im:
        assert im.n_frames == 1 + 6 // 2  # the noise, then every 2nd step
    assert not list(tmp_path.rglob(".*tmp*"))


def test_same_seed_same_images_and_batches_get_their_own_noise(run_dir, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert sample_cli("--run", run_dir, "--steps", 4, "--num", 4, "--batch-size", 2, "--seed", seed,
                          "--npz", tmp_path / f"{name}.npz", "--out", tmp_path / f"{name}.png") == 0
    a, b, c = (np.load(tmp_path / f"{n}.npz")["arr_0"].astype(int) for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 10
    assert np.abs(a[:2] - a[2:]).max() > 10  # the second batch is not a copy of the first


def test_default_output_goes_to_the_run(run_dir, capsys):
    assert sample_cli("--ckpt", run_dir / "checkpoints" / "final.ckpt", "--sampler", "ddpm", "--num", 2) == 0
    out = capsys.readouterr().out
    assert "in 40 steps" in out  # DDPM defaults to all T steps
    assert (run_dir / "samples" / "ddpm-40steps-seed0.png").is_file()


def test_compare_puts_four_samplers_side_by_side(run_dir, tmp_path, capsys):
    assert sample_cli("--run", run_dir, "--compare", "--num", 4, "--out", tmp_path / "cmp.png") == 0
    out = capsys.readouterr().out
    assert "40 steps" in out and "DDIM" in out and "DPM-Solver++ 2M:" in out and "DPM-Solver++ 2M SDE:" in out
    with Image.open(tmp_path / "cmp.png") as im:
        assert im.size[0] > 3 * im.size[1]  # four panels in a row


@pytest.mark.parametrize("argv,needle", [
    (["--sampler", "euler"], "invalid choice: 'euler'"),
    (["--steps", "0"], "positive integer"),
    (["--eta", "2"], "must be in [0, 1]"),
    (["--seed", "-1"], "zero or positive"),
])
def test_bad_arguments_exit_with_a_message(run_dir, argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--run", str(run_dir), *argv])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_problems_found_after_loading_are_one_line(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.json").write_text((run_dir / "config.json").read_text())
    other = make_run(tmp_path / "other", dim=16)
    stray = tmp_path / "stray.ckpt"
    stray.write_bytes((run_dir / "checkpoints" / "final.ckpt").read_bytes())
    cases = [
        (["--run", run_dir, "--steps", 41], "more than the model's 40 diffusion timesteps"),
        (["--run", empty], "no checkpoints in"),
        (["--run", tmp_path / "nowhere"], "does not exist"),
        (["--ckpt", stray], "no config.json beside"),
        (["--run", run_dir, "--sampler", "dpm++", "--eta", "0.5"], "--eta applies to --sampler ddim"),
        (["--ckpt", run_dir / "checkpoints" / "final.ckpt", "--run", other], "not allowed with"),
    ]
    for argv, needle in cases:
        try:
            code = sample_cli(*argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and needle in err, (argv, err)
        assert "Traceback" not in err
    # A checkpoint from another config names the parameters that differ.
    assert json.loads((other / "config.json").read_text())["model"]["dim"] != 8, "the other run is another shape"
    (other / "checkpoints" / "final.ckpt").unlink()
    (other / "checkpoints" / "final.ckpt").write_bytes((run_dir / "checkpoints" / "final.ckpt").read_bytes())
    assert sample_cli("--run", other) == 2
    assert "differ in shape" in capsys.readouterr().err


def test_ema_weights_by_default_raw_on_request_and_both_side_by_side(tmp_path, capsys):
    import mindspore as ms

    run = tmp_path / "ema_run"
    cfg = Config(preset="tiny", model=UNetConfig(image_size=(8, 8), channels=1, dim=8, dim_mults=(1, 2)),
                 diffusion=DiffusionConfig(timesteps=40), data=DataConfig(), train=TrainConfig(sample_steps=10))
    run.mkdir()
    cfg.save(run / "config.json")
    ms.set_seed(1)
    raw = UNet(cfg.model)
    ms.set_seed(2)
    ema = UNet(cfg.model)  # other weights: the two must give other images from the same noise
    save_checkpoint(raw, run / "checkpoints" / "final.ckpt", {"step": 1, "epoch": 0}, ema_model=ema)
    arrays = {}
    for weights in ("auto", "ema", "raw"):
        assert sample_cli("--run", run, "--steps", 3, "--num", 4, "--weights", weights,
                          "--npz", tmp_path / f"{weights}.npz", "--out", tmp_path / f"{weights}.png") == 0
        arrays[weights] = np.load(tmp_path / f"{weights}.npz")["arr_0"]
        assert f"{'ema' if weights == 'auto' else weights} weights" in capsys.readouterr().out
    assert np.array_equal(arrays["auto"], arrays["ema"]) and not np.array_equal(arrays["ema"], arrays["raw"])
    assert sample_cli("--run", run, "--steps", 3, "--num", 4, "--weights", "both") == 0
    figure = run / "samples" / "ema-vs-raw-final-dpmpp-3steps-seed0.png"
    assert figure.is_file() and str(figure) in capsys.readouterr().out
    with Image.open(figure) as im:
        assert im.width > 1.5 * im.height, "two grids side by side"


def test_ema_weights_of_a_run_without_ema_are_a_clear_error(run_dir, capsys):
    assert sample_cli("--run", run_dir, "--steps", 3, "--num", 2, "--weights", "ema") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no EMA weights" in err


def test_class_labels_by_number_name_or_none(tmp_path, capsys):
    run = make_run(tmp_path / "cond", num_classes=10)
    arrays = {}
    for label in ("7", "sneaker", "Ankle-boot", "none"):
        out = tmp_path / f"{label}.npz"
        assert sample_cli("--run", run, "--steps", 3, "--num", 2, "--class-label", label, "--guidance-scale", 2,
                          "--npz", out, "--out", tmp_path / f"{label}.png") == 0, capsys.readouterr().err
        with np.load(out) as f:
            arrays[label] = f["arr_0"].astype(int)
            # The class of every image travels with it (none for "no class", the unconditional model).
            expected = {"7": [7, 7], "sneaker": [7, 7], "Ankle-boot": [9, 9]}.get(label)
            assert f["labels"].tolist() == expected if expected else "labels" not in f.files
    np.testing.assert_array_equal(arrays["7"], arrays["sneaker"])  # class 7 of Fashion-MNIST is Sneaker
    assert sample_cli("--run", run, "--steps", 3, "--num", 2, "--class-label", "7", "--guidance-scale", 2,
                      "--guidance-rescale", 0.7, "--out", tmp_path / "rescaled.png") == 0
    assert "in 3 steps, guidance w = 2 rescaled 0.7:" in capsys.readouterr().out
    out = tmp_path / "interval.npz"
    assert sample_cli("--run", run, "--steps", 3, "--num", 2, "--class-label", "7", "--guidance-scale", 2,
                      "--guidance-interval", "0,20", "--npz", out, "--out", tmp_path / "interval.png") == 0
    assert "in 3 steps, guidance w = 2 at 0 <= t <= 20:" in capsys.readouterr().out
    interval = np.load(out)["arr_0"].astype(int)
    assert np.abs(interval - arrays["7"]).max() > 0, "guiding fewer steps changes the images"
    assert np.abs(arrays["sneaker"] - arrays["Ankle-boot"]).max() > 0
    assert np.abs(arrays["sneaker"] - arrays["none"]).max() > 0
    # By default every class in turn, one per grid column.
    assert sample_cli("--run", run, "--steps", 2, "--num", 20, "--out", tmp_path / "all.png",
                      "--npz", tmp_path / "all.npz") == 0, capsys.readouterr().err
    with Image.open(tmp_path / "all.png") as im:
        assert im.size == (10 * 64 + 11 * 2, 2 * 64 + 3 * 2)
    with np.load(tmp_path / "all.npz") as f:  # and the .npz keeps each image's class
        assert f["arr_0"].shape == (20, 8, 8, 1) and f["labels"].tolist() == list(range(10)) * 2
    assert sample_cli("--run", run, "--steps", 2, "--num", 2, "--class-label", "sock") == 2
    err = capsys.readouterr().err
    assert "--class-label: class 'sock' is not one of this model's classes (0 T-shirt/top" in err and "'none'" in err


def test_class_label_on_an_unconditional_model_is_a_clear_error(run_dir, capsys):
    assert sample_cli("--run", run_dir, "--num", 2, "--steps", 2, "--class-label", "3") == 2
    assert "unconditional (train with --num-classes 10" in capsys.readouterr().err
    assert sample_cli("--run", run_dir, "--num", 2, "--steps", 2, "--guidance-rescale", "0.7") == 2
    assert "--guidance-rescale applies to class-conditional models" in capsys.readouterr().err
    assert sample_cli("--run", run_dir, "--num", 2, "--steps", 2, "--guidance-interval", "0,10") == 2
    assert "--guidance-interval applies to class-conditional models" in capsys.readouterr().err


def test_solver_order_changes_dpm_solver_and_refuses_what_it_cannot_do(run_dir, tmp_path, capsys):
    # Order 2 is the default; 1 and 3 take other updates from the same noise (8 steps: 3M acts from step 3).
    arrays = {}
    for name, flags in (("default", []), ("2", ["--solver-order", "2"]), ("1", ["--solver-order", "1"]),
                        ("3", ["--solver-order", "3"])):
        out = tmp_path / f"{name}.npz"
        assert sample_cli("--run", run_dir, "--steps", 8, "--num", 2, *flags, "--npz", out,
                          "--out", tmp_path / f"{name}.png") == 0, capsys.readouterr().err
        arrays[name] = np.load(out)["arr_0"].astype(int)
    assert "DPM-Solver++ 3M in 8 steps" in capsys.readouterr().out
    np.testing.assert_array_equal(arrays["default"], arrays["2"])
    assert np.abs(arrays["default"] - arrays["1"]).max() > 0 and np.abs(arrays["default"] - arrays["3"]).max() > 0
    assert sample_cli("--run", run_dir, "--steps", 2, "--num", 2, "--solver-order", "3") == 0
    assert (run_dir / "samples" / "dpmpp-3M-2steps-seed0.png").is_file()  # the default name says the order
    assert sample_cli("--run", run_dir, "--steps", 3, "--num", 2, "--solver-order", "2") == 0
    assert (run_dir / "samples" / "dpmpp-3steps-seed0.png").is_file()  # order 2 is the default's: its name
    assert not (run_dir / "samples" / "dpmpp-2M-3steps-seed0.png").exists()
    for flags, needle in ((["--sampler", "ddim"], "--solver-order applies to --sampler dpm++ and dpm++sde, not ddim"),
                          (["--sampler", "dpm++sde"], "--solver-order 3 solves the ODE only: use --sampler dpm++"),
                          (["--compare"], "drop --solver-order")):
        assert sample_cli("--run", run_dir, "--num", 2, "--solver-order", "3", *flags) == 2
        assert needle in capsys.readouterr().err
    assert sample_cli("--run", run_dir, "--steps", 2, "--num", 2, "--sampler", "dpm++sde", "--solver-order", "1",
                      "--out", tmp_path / "sde1.png") == 0
    with pytest.raises(SystemExit) as e:
        sample_cli("--run", run_dir, "--solver-order", "4")
    assert e.value.code == 2 and "invalid choice: 4" in capsys.readouterr().err


def test_lambda_min_clipped_moves_the_start_of_dpm_solver(run_dir, tmp_path, capsys):
    # The default (-4.3) starts the 40-step cosine model's trailing grid below t = 39; none starts at 39.
    arrays = {}
    for name, flags in (("default", []), ("same", ["--lambda-min-clipped", "-4.3"]),
                        ("none", ["--lambda-min-clipped", "none"]), ("inf", ["--lambda-min-clipped=-inf"])):
        out = tmp_path / f"{name}.npz"
        assert sample_cli("--run", run_dir, "--steps", 4, "--num", 2, *flags, "--npz", out,
                          "--out", tmp_path / f"{name}.png") == 0, capsys.readouterr().err
        arrays[name] = np.load(out)["arr_0"].astype(int)
    np.testing.assert_array_equal(arrays["default"], arrays["same"])
    np.testing.assert_array_equal(arrays["none"], arrays["inf"])
    assert np.abs(arrays["default"] - arrays["none"]).max() > 0
    for sampler in ("ddim", "ddpm"):
        assert sample_cli("--run", run_dir, "--num", 2, "--sampler", sampler, "--lambda-min-clipped", "-4") == 2
        assert f"--lambda-min-clipped applies to --sampler dpm++ and dpm++sde, not {sampler}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        sample_cli("--run", run_dir, "--lambda-min-clipped", "low")
    assert e.value.code == 2
    assert "'low' is not a log-SNR (a number such as -4.3) or none" in capsys.readouterr().err


def read_npz(path):
    with np.load(path) as f:
        return f["arr_0"].astype(np.float32)


def test_colour_flags_brighten_and_name_the_file(run_dir, tmp_path, capsys):
    common = ("--run", run_dir, "--sampler", "ddim", "--steps", 6, "--num", 4)
    assert sample_cli(*common, "--npz", tmp_path / "plain.npz", "--out", tmp_path / "plain.png") == 0
    assert sample_cli(*common, "--npz", tmp_path / "white.npz", "--color", "255,255,255", "--color-scale", 40) == 0
    out = capsys.readouterr().out
    assert "colour #ffffff x 40" in out and (run_dir / "samples" / "ddim-6steps-seed0-color.png").is_file()
    assert read_npz(tmp_path / "white.npz").mean() > read_npz(tmp_path / "plain.npz").mean() + 20


def test_init_image_and_mask_keep_what_they_should(run_dir, tmp_path, capsys):
    Image.fromarray(np.full((20, 20), 230, np.uint8)).save(tmp_path / "grey.png")  # resized to the model's 8x8
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # repaint the right half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ("--run", run_dir, "--sampler", "ddim", "--steps", 6, "--num", 3, "--init-image", tmp_path / "grey.png")
    assert sample_cli(*common, "--strength", 0, "--npz", tmp_path / "same.npz", "--out", tmp_path / "s.png") == 0
    np.testing.assert_array_equal(read_npz(tmp_path / "same.npz"), 230)
    assert sample_cli(*common, "--mask", tmp_path / "mask.png", "--npz", tmp_path / "inpaint.npz",
                      "--out", tmp_path / "i.png") == 0
    inpainted = read_npz(tmp_path / "inpaint.npz")
    np.testing.assert_array_equal(inpainted[:, :, :4], 230)
    assert np.abs(inpainted[:, :, 4:] - 230).mean() > 20
    assert "inpainting grey.png" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--color", "red"], "argument --color: colour 'red' is not R,G,B"),
    (["--color-scale", "5"], "--color-scale needs --color R,G,B"),
    (["--guidance-through-model"], "--guidance-through-model and --loss-guidance-interval shape"),
    (["--strength", "0.5"], "--mask and --strength apply to --init-image"),
    (["--jump-n-sample", "3"], "--jump-length and --jump-n-sample are RePaint's resampling"),
    (["--init-image", "nowhere.png"], "image file nowhere.png does not exist"),
])
def test_bad_steering_flags_are_one_clear_line(run_dir, argv, message, capsys):
    try:
        code = sample_cli("--run", run_dir, "--steps", 2, "--num", 1, *argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
