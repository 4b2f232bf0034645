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


def test_bad_data_name_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data", "cifar10"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_missing_data_names_this_commands_folder_flag(tmp_path, capsys):
    assert main(["--data", "mnist", "--root", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "pass --root DIR" in err and "--data DIR" not in err, err
