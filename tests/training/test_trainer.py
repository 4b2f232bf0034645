"""End-to-end: a tiny compiled training run whose loss falls, its run directory, checkpoints that
round-trip (and refuse another config), a NaN loss, and a run directory that already exists."""
import csv
import json

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest

from ddpm_ms.config import Config, DataConfig, DiffusionConfig, TrainConfig
from ddpm_ms.data import load_idx_dataset
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.checkpoint import CheckpointMismatch, load_into
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.training import NonFiniteLoss, Trainer

pytestmark = pytest.mark.slow


def tiny_config(**train):
    defaults = dict(batch_size=16, lr=2e-3, steps=60, log_every=1, save_every=30, num_samples=4, sample_steps=5,
                    sample_every=60, device="CPU", seed=0)
    defaults.update(train)
    return Config(preset="tiny", model=UNetConfig(image_size=(28, 28), channels=1, dim=8, dim_mults=(1, 2)),
                  diffusion=DiffusionConfig(timesteps=100, beta_schedule="cosine", p2_gamma=0.5),
                  data=DataConfig(dataset="fashion_mnist"), train=TrainConfig(**defaults))


def tiny_dataset(n=256, batch_size=16):
    images, _ = load_idx_dataset("fashion_mnist")
    x = (images[:n, None].astype(np.float32) / 127.5 - 1.0)
    return ds.NumpySlicesDataset({"image": x}, shuffle=True).batch(batch_size, drop_remainder=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    # FID evaluated at steps 30 and 60 on 16 images (DPM-Solver++, 3 steps).
    trainer = Trainer(tiny_config(eval_every=30, eval_num=16, eval_steps=3), out, dataset=tiny_dataset(),
                      progress=False)
    summary = trainer.fit()
    return out, summary, trainer


def test_loss_falls_in_graph_mode(trained):
    out, summary, _ = trained
    with open(out / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 60
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.6 * first, (first, last)
    assert summary["mode"] == "graph" and summary["steps"] == 60


def test_run_directory_is_self_describing(trained):
    out, summary, _ = trained
    for name in ("config.json", "log.csv", "loss.png", "denoising.gif", "summary.json",
                 "checkpoints/step_0000030.ckpt", "checkpoints/step_0000060.ckpt", "checkpoints/final.ckpt",
                 "samples/step_0000060.png", "samples/final.png", "eval.jsonl"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".tmp*")), "no temporary files are left behind"
    assert Config.load(out).to_dict() == tiny_config(eval_every=30, eval_num=16, eval_steps=3).to_dict()


def test_fid_is_logged_while_training(trained):
    out, summary, _ = trained
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fids = {int(r["step"]): float(r["fid"]) for r in rows if r["fid"]}
    assert sorted(fids) == [30, 60] and all(v > 0 for v in fids.values()), fids
    records = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["fid"], r["num"], r["sampler"], r["steps"]) for r in records] == \
        [(30, fids[30], 16, "dpm++", 3), (60, fids[60], 16, "dpm++", 3)]
    assert records[0]["weights"] == "ema" and 0 <= records[0]["precision"] <= 1
    assert summary["eval"]["fid"] == fids[60] and summary["eval"]["step"] == 60


def test_evaluation_without_a_classifier_for_the_data_is_refused_before_writing(tmp_path):
    from ddpm_ms.metrics.evaluation import MetricsUnavailable

    cfg = tiny_config(eval_every=10)
    cfg.data.dataset = "image_folder"
    with pytest.raises(MetricsUnavailable, match="Drop --eval-every"):
        Trainer(cfg, tmp_path / "run", dataset=tiny_dataset(), progress=False)
    assert not (tmp_path / "run").exists()


def test_checkpoint_round_trip_ema_by_default_raw_on_request(trained):
    out, _, trainer = trained
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 1, 28, 28), dtype=np.float32))
    t = ms.Tensor(np.array([5.0, 50.0], np.float32))
    trainer.model.set_train(False)
    ema_pipe, raw_pipe = DiffusionPipeline.from_pretrained(out), DiffusionPipeline.from_pretrained(out, weights="raw")
    assert (ema_pipe.loaded_weights, raw_pipe.loaded_weights) == ("ema", "raw")
    ema, raw = ema_pipe.model, raw_pipe.model
    np.testing.assert_allclose(ema(x, t).asnumpy(), trainer.ema_model(x, t).asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(raw(x, t).asnumpy(), trainer.model(x, t).asnumpy(), rtol=1e-6, atol=1e-6)
    # After 60 steps the average differs from the weights it averages.
    assert np.abs(ema(x, t).asnumpy() - raw(x, t).asnumpy()).max() > 1e-3


def test_checkpoint_from_another_config_names_the_parameters(trained):
    out, _, _ = trained
    other = UNet(UNetConfig(image_size=(28, 28), channels=1, dim=12, dim_mults=(1, 2)))
    with pytest.raises(CheckpointMismatch) as e:
        load_into(other, out / "checkpoints" / "final.ckpt")
    msg = str(e.value)
    assert "differ in shape" in msg and "checkpoint (8, 8, 3, 3) vs model (12, 12, 3, 3)" in msg
    assert "config.json" in msg


def test_existing_run_directory_is_never_overwritten(trained):
    out, _, _ = trained
    before = (out / "checkpoints" / "final.ckpt").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        Trainer(tiny_config(), out, dataset=tiny_dataset(), progress=False)
    assert (out / "checkpoints" / "final.ckpt").read_bytes() == before


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    bad = tiny_dataset(64)
    bad = bad.map(operations=lambda x: x * np.float32("nan"), input_columns=["image"])
    trainer = Trainer(tiny_config(steps=5, mode="pynative"), tmp_path / "nan", dataset=bad, progress=False)
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at step 1.*Lower the learning rate"):
        trainer.fit()
    assert not (tmp_path / "nan" / "checkpoints" / "final.ckpt").exists()
