"""Class-conditional training: labels reach the model (only the embedding rows of the batch's
labels learn), a share cond_drop_prob of them becomes "no class", data without labels, or
with more classes than the model knows, is a clear error, and fine-tuning across label sets
starts from the source model's unconditional behaviour."""
import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image

from ddpm_ms.config import Config, DataConfig, DiffusionConfig, SamplingConfig, TrainConfig
from ddpm_ms.data import build_dataset, load_idx_dataset
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import UNet, UNetConfig
from ddpm_ms.checkpoint import CheckpointMismatch, load_into
from ddpm_ms.training import Trainer
from ddpm_ms.checkpoint import save_checkpoint
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer
from ddpm_ms.training.step import TrainStep
from tiny_models import ARCHS, tiny_model


def conditional_config(guidance_scale=1.0, **train):
    defaults = dict(batch_size=8, lr=2e-3, steps=4, log_every=1, save_every=4, num_samples=4, sample_steps=3,
                    sample_every=4, device="CPU", seed=0)
    defaults.update(train)
    return Config(preset="tiny", model=UNetConfig(image_size=(28, 28), channels=1, dim=8, dim_mults=(1, 2),
                                                   num_classes=10),
                  diffusion=DiffusionConfig(timesteps=100, beta_schedule="cosine", p2_gamma=0.5, cond_drop_prob=0.25),
                  data=DataConfig(dataset="fashion_mnist"), train=TrainConfig(**defaults),
                  sampling=SamplingConfig(guidance_scale=guidance_scale))


def labelled_dataset(n=64, batch_size=8, with_labels=True):
    images, labels = load_idx_dataset("fashion_mnist")
    columns = {"image": images[:n, None].astype(np.float32) / 127.5 - 1.0}
    if with_labels:
        columns["label"] = labels[:n].astype(np.int32)
    return ds.NumpySlicesDataset(columns, shuffle=False).batch(batch_size, drop_remainder=True)


def test_only_the_embeddings_of_the_batch_labels_learn(rng):
    ms.set_seed(0)
    model = UNet(UNetConfig(image_size=(16, 16), dim=8, dim_mults=(1, 2), num_classes=5))
    diffusion = GaussianDiffusion(model, NoiseSchedule(100, "cosine"), "eps", "huber", 0.5, 1.0)
    opt = build_optimizer(model.trainable_params(), WarmupSchedule(1e-2, "constant", 0, 1), "adam", 0.0)
    step = TrainStep(diffusion, opt, clip_grad=1.0)
    table = next(p for p in model.trainable_params() if "class_emb" in p.name)
    before = table.asnumpy().copy()
    x0 = ms.Tensor(rng.uniform(-1, 1, (6, 1, 16, 16)).astype(np.float32))
    t = ms.Tensor(rng.integers(0, 100, 6).astype(np.int32))
    noise = ms.Tensor(rng.standard_normal((6, 1, 16, 16)).astype(np.float32))
    step.update(x0, t, noise, ms.Tensor(np.array([1, 1, 3, 5, 3, 1], np.int32)))  # 5: "no class"
    moved = np.abs(table.asnumpy() - before).max(axis=1)
    assert (moved[[1, 3, 5]] > 1e-4).all(), moved
    assert (moved[[0, 2, 4]] == 0).all(), moved


@pytest.mark.slow
def test_conditional_run_drops_labels_and_guides_its_pictures(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(conditional_config(eval_every=4, eval_num=10, eval_steps=2, guidance_scale=2.0, num_samples=10), out,
                      dataset=labelled_dataset(), progress=False)
    labels = ms.Tensor(np.tile(np.arange(10, dtype=np.int32), 400))
    dropped = trainer.host.drop_labels(labels).asnumpy()
    kept = dropped != 10
    assert abs((~kept).mean() - 0.25) < 0.03, (~kept).mean()
    assert (dropped[kept] == labels.asnumpy()[kept]).all()
    summary = trainer.fit()
    assert summary["steps"] == 4
    record = trainer.last_eval
    assert record["guidance_scale"] == 2.0 and record["num"] == 10
    with Image.open(out / "samples" / "final.png") as im:  # one class per column: 10 images in one row
        assert im.size[0] > 8 * im.size[1], im.size


def test_data_without_labels_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"class-conditional .* needs \(image, label\) batches"):
        Trainer(conditional_config(), tmp_path / "run", dataset=labelled_dataset(with_labels=False), progress=False)


def test_labels_beyond_the_model_classes_are_a_clear_error(tmp_path):
    cfg = conditional_config()
    cfg.model.num_classes = 3
    trainer = Trainer(cfg, tmp_path / "run", dataset=labelled_dataset(), progress=False)
    with pytest.raises(ValueError, match=r"labels 0\.\.9 but the model knows 3 classes"):
        trainer.host.drop_labels(ms.Tensor(np.arange(10, dtype=np.int32)))


def test_fewer_model_classes_than_the_data_holds_is_a_clear_error():
    cfg = conditional_config()
    cfg.model.num_classes = 3
    with pytest.raises(ValueError, match="fashion_mnist has 10 classes"):
        build_dataset(cfg.data, cfg.model, 8)
    cfg.model.num_classes = 10
    dataset = build_dataset(cfg.data, cfg.model, 8)
    image, label = next(dataset.create_tuple_iterator(num_epochs=1))
    assert image.shape == (8, 1, 28, 28) and label.shape == (8,)


def small_unet(num_classes):
    return UNet(UNetConfig(image_size=(16, 16), dim=8, dim_mults=(1, 2), num_classes=num_classes))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source_classes,target_classes", [(10, 0), (0, 10), (10, 4)])
def test_fine_tuning_across_label_sets_starts_from_the_unconditional_model(tmp_path, rng, source_classes,
                                                                           target_classes, arch):
    source = tiny_model(arch, image_size=16, num_classes=source_classes)
    for p in source.trainable_params():  # a trained table: every row, "no class" too, far from zero
        if "class_emb" in p.name:
            p.set_data(ms.Tensor(rng.normal(0, 1.0, p.shape).astype(np.float32)))
    path = save_checkpoint(source, tmp_path / "source.ckpt")
    target = tiny_model(arch, image_size=16, num_classes=target_classes, seed=1)
    with pytest.raises(CheckpointMismatch, match="class_emb"):
        load_into(target, path)
    info = load_into(target, path, adapt_labels=True)
    assert info["labels"] and ("folded" in info["labels"]) == (target_classes == 0)
    x = ms.Tensor(rng.standard_normal((3, 1, 16, 16)).astype(np.float32))
    t = ms.Tensor(np.array([5, 500, 990], np.int32))
    unconditional = source(x, t).asnumpy()  # no labels: "no class"
    assert np.allclose(target(x, t).asnumpy(), unconditional, atol=1e-5)
    if target_classes:  # every new label starts as "no class"
        for label in (0, target_classes - 1):
            y = ms.Tensor(np.full(3, label, np.int32))
            assert np.allclose(target(x, t, y).asnumpy(), unconditional, atol=1e-5)
    if source_classes:  # the test would see a dropped "no class" row
        y = ms.Tensor(np.zeros(3, np.int32))
        assert not np.allclose(source(x, t, y).asnumpy(), unconditional, atol=1e-3)


def test_same_label_set_loads_unchanged(tmp_path):
    ms.set_seed(0)
    source = small_unet(10)
    path = save_checkpoint(source, tmp_path / "source.ckpt")
    target = small_unet(10)
    assert load_into(target, path, adapt_labels=True)["labels"] is None
    table = next(p for p in target.trainable_params() if "class_emb" in p.name).asnumpy()
    assert np.array_equal(table, next(p for p in source.trainable_params() if "class_emb" in p.name).asnumpy())


def test_a_conditional_run_fine_tunes_on_an_unlabelled_folder(tmp_path, rng):
    ms.set_seed(0)
    source_cfg = conditional_config()
    source = UNet(source_cfg.model)
    path = save_checkpoint(source, tmp_path / "source.ckpt")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 30), dtype=np.uint8)).save(folder / f"p{i}.png")
    cfg = conditional_config(batch_size=4, mode="pynative")
    cfg.model.num_classes = 0
    cfg.data = DataConfig(dataset="image_folder", root=str(folder), random_flip=False, num_workers=1)
    trainer = Trainer(cfg, tmp_path / "tuned", progress=False, init_from=path)
    assert "'no class' embedding folded" in trainer.initialised_from
    x = ms.Tensor(rng.standard_normal((2, 1, 28, 28)).astype(np.float32))
    t = ms.Tensor(np.array([10, 90], np.int32))
    assert np.allclose(trainer.model(x, t).asnumpy(), source(x, t).asnumpy(), atol=1e-5)
