"""The training command line: overrides reach the config, bad arguments are clear errors."""
import pytest

from ddpm_ms.cli.train import config_from_args, main, parser


def cfg_for(*argv):
    return config_from_args(parser().parse_args(list(argv)))


def test_defaults_are_the_fashion_mnist_preset():
    cfg = cfg_for()
    assert cfg.preset == "fashion_mnist" and cfg.train.mode == "graph" and cfg.train.device == "auto"


def test_overrides_reach_the_config(tmp_path):
    cfg = cfg_for("--preset", "mnist", "--steps", "10", "--batch-size", "8", "--lr", "0.001", "--timesteps", "200",
                  "--data", str(tmp_path), "--device", "CPU", "--mode", "pynative", "--sample-steps", "50",
                  "--objective", "v", "--dim", "24")
    assert cfg.model.dim == 24
    assert (cfg.preset, cfg.train.steps, cfg.train.batch_size, cfg.train.lr) == ("mnist", 10, 8, 0.001)
    assert cfg.diffusion.timesteps == 200 and cfg.data.root == str(tmp_path) and cfg.diffusion.objective == "v"
    assert cfg.train.mode == "pynative" and cfg.train.device == "CPU" and cfg.train.sample_steps == 50
    assert cfg_for("--random-flip").data.random_flip and not cfg_for("--preset", "cats", "--no-random-flip").data.random_flip
    by_epochs = cfg_for("--epochs", "2").train
    assert by_epochs.steps is None and by_epochs.epochs == 2 and by_epochs.sample_every is None


@pytest.mark.parametrize("argv,needle", [
    (["--batch-size", "0"], "positive integer"),
    (["--lr", "-1"], "must be positive"),
    (["--epochs", "two"], "not an integer"),
    (["--preset", "imagenet"], "invalid choice"),
    (["--objective", "noise"], "invalid choice"),
    (["--dim", "0"], "positive integer"),
    (["--dim", "18"], "must divide by resnet_groups"),
    (["--device", "TPU"], "invalid choice"),
    (["--epochs", "1", "--steps", "5"], "not allowed with"),
    (["--timesteps", "100", "--sample-steps", "500"], "sample_steps"),
    (["--num-classes", "0", "--guidance-scale", "2"], "guidance needs a class-conditional model"),
    (["--num-classes", "0", "--guidance-rescale", "0.5"], "guidance needs a class-conditional model"),
    (["--guidance-rescale", "1.5"], "in [0, 1]"),
    (["--num-classes", "0", "--guidance-scale", "1", "--guidance-interval", "0,500"],
     "guidance needs a class-conditional model"),
    (["--guidance-interval", "700,0"], "0 <= LO <= HI"),
    (["--guidance-interval", "0-700"], "is not LO,HI"),
])
def test_bad_arguments_exit_with_a_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_data_is_reported_not_a_traceback(tmp_path, capsys):
    code = main(["--preset", "mnist", "--data", str(tmp_path / "no-mnist"), "--out", str(tmp_path / "run"),
                 "--device", "CPU", "--steps", "1", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-mnist" in err and "ddpm_ms.data.download mnist" in err


def test_unavailable_device_is_reported(tmp_path, capsys):
    from ddpm_ms.device import _available

    missing = [d for d in ("Ascend", "GPU") if not _available(d)]
    if not missing:
        pytest.skip("both Ascend and GPU are available here: no unavailable device to ask for")
    code = main(["--device", missing[0], "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"])
    assert code == 2
    assert f"{missing[0]} is not available" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_flags_of_long_runs_reach_the_config():
    t = cfg_for("--optimizer", "adamw", "--weight-decay", "0.01", "--lr-schedule", "warmup-constant",
                "--warmup-steps", "100", "--clip-grad", "0.5", "--grad-accum", "4", "--ema-decay", "0.99",
                "--ema-update-every", "5",
                "--amp", "O2", "--amp-dtype", "bfloat16", "--save-every", "250", "--keep-last", "5",
                "--pin-every", "1000").train
    assert (t.optimizer, t.weight_decay, t.lr_schedule, t.warmup_steps) == ("adamw", 0.01, "warmup-constant", 100)
    assert (t.clip_grad, t.grad_accum, t.ema_decay, t.ema_update_every) == (0.5, 4, 0.99, 5)
    assert (t.amp, t.amp_dtype, t.save_every, t.keep_last, t.pin_every) == ("O2", "bfloat16", 250, 5, 1000)
    off = cfg_for("--clip-grad", "0", "--ema-decay", "0").train
    assert off.clip_grad is None and off.ema_decay == 0.0
    preset = cfg_for().train
    recipe = (preset.lr, preset.lr_schedule, preset.warmup_steps, preset.ema_decay, preset.ema_update_every)
    assert recipe == (2e-3, "cosine", 500, 0.995, 10)
    assert (preset.clip_grad, preset.keep_last) == (1.0, 3)


def test_a_warmup_that_fills_a_shortened_run_is_pointed_out():
    from ddpm_ms.cli.train import warmup_note
    assert warmup_note(cfg_for().train, 7500) is None          # the preset: 500 of 7,500 updates
    assert warmup_note(cfg_for("--steps", "3000").train, 3000) is None
    note = warmup_note(cfg_for("--steps", "1200").train, 1200)
    assert "fills 42% of this 1200-update run" in note and "--warmup-steps 80" in note
    assert "never reaches" in warmup_note(cfg_for("--steps", "300").train, 300)
    assert warmup_note(cfg_for("--steps", "300", "--warmup-steps", "20").train, 300) is None
    assert warmup_note(cfg_for("--steps", "300", "--lr-schedule", "constant", "--warmup-steps", "0").train, 300) is None


def test_dit_presets_and_size_flags_reach_the_config():
    cfg = cfg_for("--preset", "dit_mnist")
    m = cfg.model
    assert (m.arch, m.patch_size, m.hidden_size, m.depth, m.attn_heads) == ("dit", 4, 64, 3, 4)
    assert cfg.data.dataset == "mnist" and cfg_for("--preset", "dit_fashion_mnist").data.dataset == "fashion_mnist"
    m = cfg_for("--preset", "dit_mnist", "--patch-size", "2", "--hidden-size", "96", "--depth", "6", "--heads", "6").model
    assert (m.patch_size, m.hidden_size, m.depth, m.attn_heads) == (2, 96, 6, 6)


def test_loss_weighting_flags_reach_the_config():
    d = cfg_for("--p2-gamma", "0", "--min-snr-gamma", "5").diffusion
    assert (d.p2_gamma, d.min_snr_gamma) == (0.0, 5.0)
    preset = cfg_for().diffusion
    assert (preset.p2_gamma, preset.min_snr_gamma) == (0.5, 0.0)


def test_conditioning_flags_reach_the_config():
    cfg = cfg_for("--num-classes", "10", "--cond-drop-prob", "0.2", "--guidance-scale", "1.5",
                  "--guidance-rescale", "0.7")
    assert (cfg.model.num_classes, cfg.diffusion.cond_drop_prob, cfg.sampling.guidance_scale) == (10, 0.2, 1.5)
    assert cfg.sampling.guidance_rescale == 0.7
    assert cfg_for().sampling.guidance_interval == (0, 700), "the preset guides the steps at t <= 700"
    assert cfg_for("--guidance-interval", "100,800").sampling.guidance_interval == (100, 800)
    assert cfg_for("--guidance-interval", "all").sampling.guidance_interval is None


def test_evaluation_flags_reach_the_config():
    t = cfg_for("--eval-every", "500", "--eval-num", "2000", "--eval-sampler", "ddim", "--eval-steps", "50").train
    assert (t.eval_every, t.eval_num, t.eval_sampler, t.eval_steps) == (500, 2000, "ddim", 50)
    assert cfg_for().train.eval_every == 0  # off unless asked for
    short = cfg_for("--timesteps", "10").train  # a short schedule lowers the evaluation's steps with it
    assert (short.eval_steps, short.sample_steps) == (10, 10)


def test_config_file_and_run_directory_are_starting_points(tmp_path):
    cfg = cfg_for("--preset", "mnist", "--steps", "7")
    cfg.save(tmp_path / "config.json")
    again = cfg_for("--config", str(tmp_path / "config.json"), "--lr", "0.01")
    assert again.preset == "mnist" and again.train.steps == 7 and again.train.lr == 0.01
    assert cfg_for("--config", str(tmp_path)).to_dict() == cfg.to_dict()
    resumed = cfg_for("--resume", str(tmp_path), "--steps", "9")
    assert resumed.preset == "mnist" and resumed.train.steps == 9


@pytest.mark.parametrize("argv,needle", [
    (["--ema-decay", "1"], "must be below 1"),
    (["--ema-decay", "-0.1"], "in [0, 1]"),
    (["--grad-accum", "0"], "positive integer"),
    (["--clip-grad", "-1"], "zero or positive"),
    (["--amp", "O3"], "invalid choice"),
    (["--amp-dtype", "float8"], "invalid choice"),
    (["--lr-schedule", "step"], "invalid choice"),
    (["--keep-last", "-1"], "zero or positive"),
    (["--eval-num", "3", "--eval-every", "10"], "at least 4"),
    (["--eval-steps", "2000", "--eval-every", "10"], "cannot exceed"),
    (["--eval-sampler", "euler"], "invalid choice"),
    (["--resume", "runs/x", "--init-from", "runs/y"], "use one"),
    (["--resume", "runs/x", "--preset", "mnist"], "drop --preset"),
    (["--depth", "4"], "--depth sizes a DiT"),
    (["--patch-size", "2"], "--patch-size sizes a DiT"),
    (["--hidden-size", "96"], "--hidden-size sizes a DiT"),
    (["--heads", "2"], "--heads sizes a DiT"),
    (["--preset", "dit_mnist", "--dim", "32"], "--dim sizes a U-Net or a DDPM U-Net; a DiT takes --patch-size, --hidden-size"),
    (["--preset", "dit_mnist", "--patch-size", "3"], "does not divide by model.patch_size=3"),
    (["--preset", "dit_mnist", "--heads", "5"], "--heads may be one of [1, 2, 4, 8, 16, 32, 64]"),
    (["--preset", "dit_mnist", "--hidden-size", "30"], "multiple of 4"),
    (["--preset", "dit_mnist", "--depth", "0"], "argument --depth: must be a positive integer"),
])
def test_bad_long_run_arguments_exit_with_a_message(argv, needle, capsys, tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    from ddpm_ms.presets import preset as make_preset
    make_preset("fashion_mnist").save(tmp_path / "x" / "config.json")
    before = (tmp_path / "x" / "config.json").read_bytes()
    monkeypatch.chdir(tmp_path)  # where a default run directory would be made
    argv = [a.replace("runs/x", str(tmp_path / "x")) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    # refused before anything is written: the named run is untouched and no new run appears
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["config.json"]
    assert (tmp_path / "x" / "config.json").read_bytes() == before


def test_resume_of_a_directory_without_a_run_is_reported(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "no config at" in capsys.readouterr().err


def test_init_from_keeps_the_source_model_unless_a_preset_is_named(tmp_path):
    source = cfg_for("--preset", "mnist", "--steps", "7")
    source.model.dim = 24
    (tmp_path / "src" / "checkpoints").mkdir(parents=True)
    source.save(tmp_path / "src" / "config.json")
    tuned = cfg_for("--init-from", str(tmp_path / "src"), "--dataset", "image_folder", "--data", "photos",
                    "--steps", "3")
    assert tuned.model.dim == 24 and tuned.data.dataset == "image_folder" and tuned.data.root == "photos"
    assert tuned.train.steps == 3
    from_file = cfg_for("--init-from", str(tmp_path / "src" / "checkpoints" / "final.ckpt"))
    assert from_file.model.dim == 24, "a checkpoint path finds the config of its run"
    assert cfg_for("--init-from", str(tmp_path / "src"), "--preset", "fashion_mnist").model.dim == 16


def test_a_conditional_source_fine_tunes_on_a_folder_without_labels(tmp_path):
    source = cfg_for("--num-classes", "10", "--guidance-scale", "2")
    (tmp_path / "src" / "checkpoints").mkdir(parents=True)
    source.save(tmp_path / "src" / "config.json")
    source.sampling.guidance_rescale = 0.5
    source.save(tmp_path / "src" / "config.json")
    tuned = cfg_for("--init-from", str(tmp_path / "src"), "--dataset", "image_folder", "--data", "photos")
    assert (tuned.model.num_classes, tuned.sampling.guidance_scale, tuned.sampling.guidance_rescale) == (0, 1.0, 0.0)
    assert tuned.sampling.guidance_interval is None
    labelled = cfg_for("--init-from", str(tmp_path / "src"), "--dataset", "mnist")
    assert (labelled.model.num_classes, labelled.sampling.guidance_scale) == (10, 2.0), "labelled data keep them"
    with pytest.raises(ValueError, match="no class labels"):  # asked for explicitly: refused, not dropped
        cfg_for("--init-from", str(tmp_path / "src"), "--dataset", "image_folder", "--num-classes", "10")


def test_resume_without_a_directory_takes_out_or_the_newest_run(tmp_path, monkeypatch):
    import os
    from ddpm_ms.cli import train as train_cli

    monkeypatch.setattr(train_cli, "RUNS", tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="pass --resume RUN_DIR"):
        train_cli.resume_dir(parser().parse_args(["--resume"]))
    for name, mtime in (("old", 1000), ("new", 1002), ("middle", 1001)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        cfg_for().save(tmp_path / "runs" / name / "config.json")
        os.utime(tmp_path / "runs" / name / "config.json", (mtime, mtime))
    assert train_cli.resume_dir(parser().parse_args(["--resume"])).name == "new"
    args = parser().parse_args(["--resume", "--out", str(tmp_path / "runs" / "old")])
    assert train_cli.resume_dir(args).name == "old"
