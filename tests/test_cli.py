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
                  "--objective", "v")
    assert (cfg.preset, cfg.train.steps, cfg.train.batch_size, cfg.train.lr) == ("mnist", 10, 8, 0.001)
    assert cfg.diffusion.timesteps == 200 and cfg.data.root == str(tmp_path) and cfg.diffusion.objective == "v"
    assert cfg.train.mode == "pynative" and cfg.train.device == "CPU" and cfg.train.sample_steps == 50
    by_epochs = cfg_for("--epochs", "2").train
    assert by_epochs.steps is None and by_epochs.epochs == 2 and by_epochs.sample_every is None


@pytest.mark.parametrize("argv,needle", [
    (["--batch-size", "0"], "positive integer"),
    (["--lr", "-1"], "must be positive"),
    (["--epochs", "two"], "not an integer"),
    (["--preset", "imagenet"], "invalid choice"),
    (["--objective", "noise"], "invalid choice"),
    (["--device", "TPU"], "invalid choice"),
    (["--epochs", "1", "--steps", "5"], "not allowed with"),
    (["--timesteps", "100", "--sample-steps", "500"], "sample_steps"),
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
