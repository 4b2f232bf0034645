"""The command that trains the FID feature extractor: its weights, accuracy record and messages."""
import json

import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.cli.train_classifier import main
from ddpm_ms.data import load_idx_dataset
from ddpm_ms.metrics.classifier import FeatureClassifier


@pytest.mark.slow
def test_training_command_writes_weights_and_accuracy(tmp_path):
    out = tmp_path / "cls.ckpt"
    assert main(["--data", "fashion_mnist", "--max-steps", "40", "--out", str(out), "--no-progress"]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["steps"] == 40 and info["test_accuracy"] > 0.5, info  # 40 steps already beat chance (0.1) by far
    assert "--max-steps 40" in info["command"]
    model = FeatureClassifier()
    missing, unused = ms.load_param_into_net(model, ms.load_checkpoint(str(out)))
    assert missing == [] and unused == [], (missing, unused)  # the file is exactly the classifier's weights
    # ... and they are the trained ones: they classify test images as well as the JSON says (an untrained net: ~0.1)
    images, labels = load_idx_dataset("fashion_mnist", split="test")
    model.set_train(False)
    logits = model(ms.Tensor(images[:1000, None].astype(np.float32) / 127.5 - 1.0)).asnumpy()
    assert np.mean(logits.argmax(axis=1) == labels[:1000]) == pytest.approx(info["test_accuracy"], abs=0.05)


def test_cifar10_classifier_gives_a_cifar10_fid(tmp_path, capsys, monkeypatch):
    """On a CIFAR-10 archive in the official binary format (written by the test: class colours plus
    noise), the classifier learns the classes and evaluate.py scores images against the test split as
    it does for Fashion-MNIST: real images from the train split near the floor, noise far above."""
    from cifar_files import write_cifar10
    from ddpm_ms.cli.evaluate import main as evaluate
    from ddpm_ms.data.cifar10 import load_arrays

    write_cifar10(tmp_path / "cifar")
    out = tmp_path / "cls" / "cifar10_classifier.ckpt"
    assert main(["--data", "cifar10", "--root", str(tmp_path / "cifar"), "--max-steps", "30", "--batch-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["test_accuracy"] > 0.6, info  # chance: 0.1
    model = FeatureClassifier(in_channels=3, image_size=32)
    missing, unused = ms.load_param_into_net(model, ms.load_checkpoint(str(out)))
    assert missing == [] and unused == []

    monkeypatch.setenv("DDPM_MS_CLASSIFIER_DIR", str(out.parent))  # where evaluate.py finds it
    images, labels = load_arrays(tmp_path / "cifar", "train")
    noise = np.random.default_rng(0).integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "real.npz", images[:2000].transpose(0, 2, 3, 1), labels=labels[:2000])  # HWC, as PNGs hold them
    np.savez(tmp_path / "noise.npz", noise)
    capsys.readouterr()
    scores = {}
    for name in ("real", "noise"):
        assert evaluate(["--npz", str(tmp_path / f"{name}.npz"), "--data", "cifar10", "--data-root",
                         str(tmp_path / "cifar"), "--no-progress"]) == 0, capsys.readouterr().err
        scores[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["real"]["reference"] == "cifar10 test (10000 images)"
    assert scores["real"]["fid"] < 5 and scores["noise"]["fid"] > 100 * scores["real"]["fid"], scores
    assert scores["real"]["class_accuracy"] > 0.6


def test_bad_data_name_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data", "cifar100"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_missing_data_names_this_commands_folder_flag(tmp_path, capsys):
    assert main(["--data", "mnist", "--root", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "pass --root DIR" in err and "--data DIR" not in err, err
