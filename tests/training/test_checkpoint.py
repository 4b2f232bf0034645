"""Checkpoint files: what they hold, atomic writes, rotation and pins, damaged files, and
errors that name what does not fit."""
import json
import os
import re
import warnings

import mindspore as ms
import numpy as np
import pytest


from ddpm_ms.presets import preset
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms import checkpoint as ck
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer


def small(dim=8):
    return UNet(UNetConfig(image_size=(8, 8), dim=dim, dim_mults=(1, 2)))


def write(path, step, model=None, ema=None, optimizer=None, config=None):
    return ck.save_checkpoint(model or small(), path, {"step": step, "epoch": 1, "rng": json.dumps({"s": step})},
                              ema_model=ema, optimizer=optimizer, config=config)


def test_one_file_holds_weights_ema_optimizer_and_state(tmp_path):
    model, ema = small(), small()
    ema.init_conv.weight.set_data(ema.init_conv.weight * 0 + 3.0)
    opt = build_optimizer(model.trainable_params(), WarmupSchedule(1e-3), "adam")
    cfg = preset("fashion_mnist")
    path = write(tmp_path / "a.ckpt", 7, model, ema, opt, cfg)
    saved = ck.read_checkpoint(path)
    state = ck.state_of(saved)
    assert state["step"] == 7 and json.loads(state["rng"]) == {"s": 7} and state["format"] == ck.FORMAT
    assert ck.saved_config(saved) == cfg.to_dict()
    assert ck.has_ema(saved)
    assert {"optimizer.global_step", "optimizer.beta1_power"} <= set(saved)
    assert any(k.startswith("optimizer.moment1.") for k in saved)
    fresh = small()
    assert ck.load_into(fresh, path, "ema")["weights"] == "ema"
    assert float(fresh.init_conv.weight.asnumpy().max()) == 3.0
    assert ck.load_into(fresh, path, "raw")["weights"] == "raw"
    np.testing.assert_array_equal(fresh.init_conv.weight.asnumpy(), model.init_conv.weight.asnumpy())
    assert ck.load_into(fresh, path, "auto")["weights"] == "ema"


def test_loss_scaler_state_round_trips(tmp_path):
    scaler = ms.amp.DynamicLossScaler(scale_value=2.0 ** 10, scale_factor=2, scale_window=1000)
    scaler.counter.set_data(ms.Tensor(37, scaler.counter.dtype))
    model = small()
    path = ck.save_checkpoint(model, tmp_path / "a.ckpt", {"step": 1}, loss_scaler=scaler)
    fresh = ms.amp.DynamicLossScaler(scale_value=2.0 ** 16, scale_factor=2, scale_window=1000)
    saved = ck.read_checkpoint(path)
    ck.load_scaler_state(fresh, saved)
    assert float(fresh.scale_value.asnumpy()) == 1024.0 and int(fresh.counter.asnumpy()) == 37
    loaded = small()
    ck.load_into(loaded, path)  # the scaler's entries are not mistaken for weights: the weights load as saved
    for (name, a), (_, b) in zip(model.parameters_and_names(), loaded.parameters_and_names()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)


def test_a_checkpoint_without_ema_loads_raw_on_auto_and_refuses_ema(tmp_path):
    path = write(tmp_path / "a.ckpt", 1)
    assert ck.load_into(small(), path, "auto")["weights"] == "raw"
    with pytest.raises(ck.CheckpointMismatch, match="holds no EMA weights"):
        ck.load_into(small(), path, "ema")


def test_mismatched_shapes_name_the_parameters(tmp_path):
    path = write(tmp_path / "a.ckpt", 1, model=small(8))
    with pytest.raises(ck.CheckpointMismatch) as e:
        ck.load_into(small(12), path)
    msg = str(e.value)
    assert re.search(r"\d+ parameter\(s\) differ in shape: .*proj\.weight: checkpoint \(8, 8, 3, 3\) vs model "
                     r"\(12, 12, 3, 3\)", msg), msg
    assert "config.json" in msg


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = write(tmp_path / "a.ckpt", 1)
    before = path.read_bytes()

    def broken(entries, name, append_dict=None):
        with open(name, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ms, "save_checkpoint", broken)
    with pytest.raises(OSError, match="disk full"):
        write(path, 2)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".tmp-*")), "the partial file is removed"


def test_rotation_keeps_the_newest_pinned_and_renamed(tmp_path):
    d = tmp_path / "run" / "checkpoints"
    for step in range(1, 8):
        write(d / f"step_{step:07d}.ckpt", step)
    write(d / "keep_me.ckpt", 2)
    (d / "step_0000003.ckpt.pin").touch()
    removed = ck.rotate_checkpoints(tmp_path / "run", keep_last=2, pin_every=4)
    left = sorted(p.name for p in d.glob("*.ckpt"))
    assert left == ["keep_me.ckpt", "step_0000003.ckpt", "step_0000004.ckpt", "step_0000006.ckpt",
                    "step_0000007.ckpt"]
    assert sorted(p.name for p in removed) == ["step_0000001.ckpt", "step_0000002.ckpt", "step_0000005.ckpt"]
    assert ck.rotate_checkpoints(tmp_path / "run", keep_last=0) == []


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path):
    d = tmp_path / "run" / "checkpoints"
    write(d / "step_0000002.ckpt", 2)
    newest = write(d / "step_0000004.ckpt", 4)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # cut short outside our writer (a copy, a full disk)
    (d / ".tmp-step_0000006.ckpt").write_bytes(b"partial")  # a write killed midway: ignored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, saved = ck.resumable_checkpoint(tmp_path / "run")
    assert path.name == "step_0000002.ckpt" and ck.state_of(saved)["step"] == 2
    assert any("step_0000004.ckpt cannot be read" in str(w.message) for w in caught)
    with pytest.raises(ck.CheckpointUnreadable, match="may be truncated"):
        ck.read_checkpoint(newest)


def test_config_differences_name_the_fields():
    a, b = preset("fashion_mnist").to_dict(), preset("fashion_mnist")
    b.model.dim, b.train.lr = 32, 0.01
    diffs = ck.config_differences(a, b.to_dict())
    dim_diff = f"model.dim: checkpoint {a['model']['dim']}, now 32"
    assert diffs == [dim_diff, f"train.lr: checkpoint {a['train']['lr']}, now 0.01"]
    assert ck.config_differences(a, b.to_dict(), ignore=("train.lr",)) == [dim_diff]


def test_no_checkpoints_to_resume_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints .* to resume from"):
        ck.resumable_checkpoint(tmp_path)
    os.makedirs(tmp_path / "checkpoints")
    with pytest.raises(FileNotFoundError, match="train .*scripts/train.py"):
        ck.latest_checkpoint(tmp_path)
