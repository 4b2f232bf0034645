"""The portable pipeline: a run exported, deleted and sampled again gives the same weights and the
same images; a damaged, mismatched or too-new directory is one line naming the file; runs written
before the pipeline existed still load, sample and resume."""
import json
import shutil
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest

from ddpm_ms.cli.export import main as export_main
from ddpm_ms.cli.sample import main as sample_main
from ddpm_ms.config import CONFIG_FORMAT, Config, DataConfig, DiffusionConfig, SamplingConfig, TrainConfig, backbone_config
from ddpm_ms.data import load_idx_dataset
from ddpm_ms.models import build_model
from ddpm_ms.pipeline import DiffusionPipeline, PipelineFileError
from ddpm_ms.pipeline import directory
from ddpm_ms.sampling import ClassifierFreeGuidance, Img2Img
from ddpm_ms.training import Trainer
from tiny_models import TINY

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_v1"


TINY_MODELS = TINY  # one small model of every backbone
WIDTH_KEY = {"unet": ("dim", 12), "dit": ("hidden_size", 32), "ddpm_unet": ("dim", 12)}  # a model_config edit the weights no longer fit


def tiny_config(steps=6, arch="unet"):
    return Config(preset="tiny", model=backbone_config(image_size=(28, 28), channels=1, num_classes=10, **TINY_MODELS[arch]),
                  diffusion=DiffusionConfig(timesteps=50, beta_schedule="cosine"),
                  data=DataConfig(dataset="fashion_mnist"),
                  train=TrainConfig(batch_size=8, lr=2e-3, steps=steps, save_every=steps, num_samples=10,
                                    sample_steps=3, sample_every=steps, ema_decay=0.9, device="CPU", seed=0),
                  sampling=SamplingConfig(guidance_scale=2.0, guidance_interval=(0, 35)))


def tiny_dataset(n=64, batch_size=8):
    images, labels = load_idx_dataset("fashion_mnist")
    columns = {"image": images[:n, None].astype(np.float32) / 127.5 - 1.0, "label": labels[:n].astype(np.int32)}
    return ds.NumpySlicesDataset(columns, shuffle=False).batch(batch_size, drop_remainder=True)


def weights_of(model) -> dict:
    return {name: p.asnumpy().copy() for name, p in model.parameters_and_names()}


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def exported(request, tmp_path_factory):
    """(pipeline dir, the run's EMA weights, images sampled from the run, arch) of a run that no
    longer exists, for each backbone."""
    root = tmp_path_factory.mktemp(f"export_{request.param}")
    run = root / "run"
    Trainer(tiny_config(arch=request.param), run, dataset=tiny_dataset(), progress=False).fit()
    from_run = DiffusionPipeline.from_pretrained(run)
    assert from_run.loaded_weights == "ema"
    ema = weights_of(from_run.model)
    images = from_run(num_images=6, num_inference_steps=4, seed=3, batch_size=4, progress=False).images
    assert export_main(["--run", str(run), "--to", str(root / "pipe")]) == 0
    shutil.rmtree(run)
    return root / "pipe", ema, images, request.param


@pytest.mark.slow
def test_an_exported_pipeline_needs_no_run_and_samples_the_same_images(exported):
    pipe_dir, ema, images, arch = exported
    assert sorted(p.name for p in pipe_dir.iterdir()) == ["README.md", "model.safetensors", "model_config.json",
                                                          "scheduler_config.json"]
    pipe = DiffusionPipeline.from_pretrained(pipe_dir)
    assert pipe.model_config.arch == arch and type(pipe.model).__name__ == {"unet": "UNet", "dit": "DiT", "ddpm_unet": "DDPMUNet"}[arch]
    loaded = weights_of(pipe.model)
    assert loaded.keys() == ema.keys()
    assert all(np.array_equal(loaded[k], ema[k]) for k in ema), "the pipeline holds the run's EMA weights bit for bit"
    again = pipe(num_images=6, num_inference_steps=4, seed=3, batch_size=4, progress=False).images
    assert np.array_equal(again, images)
    # The sampling defaults travelled with it.
    assert (pipe.sampling.guidance_scale, pipe.sampling.guidance_interval) == (2.0, (0, 35))
    assert pipe.class_names[7] == "Sneaker" and pipe.dataset == "fashion_mnist"
    card = (pipe_dir / "README.md").read_text()
    assert f"# ddpm_ms {arch} on fashion_mnist" in card and "| training steps | 6 |" in card and "| FID | not measured" in card


@pytest.mark.slow
def test_sample_cli_draws_from_a_pipeline_directory(exported, tmp_path, capsys):
    pipe_dir = exported[0]
    code = sample_main(["--model", str(pipe_dir), "--num", "4", "--steps", "3", "--class-label", "bag",
                        "--npz", str(tmp_path / "bags.npz"), "--out", str(tmp_path / "bags.png"),
                        "--device", "CPU", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "bags.npz") as f:
        assert f["arr_0"].shape == (4, 28, 28, 1) and f["labels"].tolist() == [8] * 4
    assert sample_main(["--model", str(pipe_dir), "--weights", "raw", "--device", "CPU"]) == 2
    assert "a pipeline holds one set" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("damage,named,says", [
    ("missing_weights", directory.WEIGHTS, "is missing"),
    ("missing_model_config", directory.MODEL_CONFIG, "is missing"),
    ("cut_weights", directory.WEIGHTS, "cannot be read"),
    ("other_width", directory.WEIGHTS, "does not fit the model"),
    ("newer_format", directory.SCHEDULER_CONFIG, "newer than this ddpm_ms reads"),
    ("bad_json", directory.MODEL_CONFIG, "not valid JSON"),
    ("unknown_key", directory.MODEL_CONFIG, "does not describe a model"),
])
def test_a_damaged_pipeline_is_one_line_naming_the_file(exported, tmp_path, capsys, damage, named, says):
    pipe_dir = shutil.copytree(exported[0], tmp_path / "pipe")
    if damage.startswith("missing"):
        (pipe_dir / named).unlink()
    elif damage == "cut_weights":
        data = (pipe_dir / named).read_bytes()
        (pipe_dir / named).chmod(0o644)
        (pipe_dir / named).write_bytes(data[:len(data) // 2])
    elif damage in ("other_width", "newer_format", "unknown_key"):
        d = json.loads((pipe_dir / (directory.SCHEDULER_CONFIG if damage == "newer_format" else directory.MODEL_CONFIG)).read_text())
        if damage == "other_width":
            key, value = WIDTH_KEY[exported[3]]
            d[key] = value
        elif damage == "newer_format":
            d["format_version"] = directory.FORMAT_VERSION + 1
        else:
            d["dpeth"] = 3
        (pipe_dir / (directory.SCHEDULER_CONFIG if damage == "newer_format" else directory.MODEL_CONFIG)).write_text(json.dumps(d))
    else:
        (pipe_dir / named).write_text('{"format_version": 1, "dim": ')
    with pytest.raises(PipelineFileError) as info:
        DiffusionPipeline.from_pretrained(pipe_dir)
    message = str(info.value)
    assert str(pipe_dir / named) in message and says in message and "\n" not in message, message
    assert sample_main(["--model", str(pipe_dir), "--device", "CPU"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err


@pytest.mark.slow
def test_save_pretrained_never_writes_over_what_a_user_made(exported, tmp_path):
    pipe = DiffusionPipeline.from_pretrained(exported[0])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        pipe.save_pretrained(mine)
    with pytest.raises(FileExistsError, match="not a pipeline directory"):
        pipe.save_pretrained(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    again = pipe.save_pretrained(tmp_path / "copy")
    assert pipe.save_pretrained(again, overwrite=True) == again  # a pipeline directory may be replaced on request


def test_labels_by_number_name_or_none_and_a_clear_error_otherwise():
    cfg = tiny_config()
    pipe = DiffusionPipeline.from_config(cfg, build_model(cfg.model))
    assert pipe.labels_for(3, "sneaker").tolist() == [7, 7, 7]
    assert pipe.labels_for(2, ["T-shirt", "ankle_boot"]).tolist() == [0, 9]
    assert pipe.labels_for(2, "none").tolist() == [10, 10]
    assert pipe.labels_for(12, None).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1], "every class in turn"
    with pytest.raises(ValueError, match="'dog' is not one of this model's classes .*7 Sneaker"):
        pipe.labels_for(1, "dog")
    with pytest.raises(ValueError, match="outside 0..9"):
        pipe.labels_for(1, 11)
    with pytest.raises(ValueError, match="one label or 3"):
        pipe.labels_for(3, [1, 2])
    assert pipe.guidance() == ClassifierFreeGuidance(2.0, 0.0, (0, 35))
    assert pipe.guidance(guidance_interval="all").interval is None


def test_img2img_and_inpaint_share_the_model_and_bad_calls_are_named():
    cfg = tiny_config()
    pipe = DiffusionPipeline.from_config(cfg, build_model(cfg.model))
    pipe.jit = False
    image = np.random.default_rng(0).uniform(0, 1, (28, 28)).astype(np.float32)  # an array in [0, 1]
    mask = np.zeros((28, 28), np.float32)
    mask[:, 14:] = 1  # repaint the right half
    same = pipe.img2img(image, strength=0.0)
    assert same.model is pipe.model and pipe.edit is None and isinstance(same.edit, Img2Img)
    np.testing.assert_array_equal(same(2, num_inference_steps=2, progress=False).images,
                                  np.broadcast_to(image * 2 - 1, (2, 1, 28, 28)))  # strength 0: the image itself
    kept = pipe.inpaint(image, mask)(2, sampler="ddpm", num_inference_steps=2, progress=False).images
    np.testing.assert_array_equal(kept[..., :14], np.broadcast_to(image[:, :14] * 2 - 1, (2, 1, 28, 14)))
    with pytest.raises(ValueError, match="with jumps using the ddpm or ddim sampler"):
        pipe.inpaint(image, mask, jump_length=2, jump_n_sample=2)(1, sampler="dpm++", num_inference_steps=2)
    with pytest.raises(ValueError, match="starts from an image"):
        pipe.img2img(None)
    with pytest.raises(ValueError, match="guidance_scale or a ClassifierFreeGuidance"):
        pipe(1, guidance_scale=3.0, guidance=ClassifierFreeGuidance(3.0))
    with pytest.raises(ValueError, match="a ready `scheduler` or a `sampler`"):
        pipe(1, sampler="ddim", scheduler=pipe.scheduler("ddim"))


def test_a_pipeline_config_newer_than_the_code_is_refused(tmp_path):
    cfg = tiny_config()
    pipe = DiffusionPipeline.from_config(cfg, build_model(cfg.model))
    out = pipe.save_pretrained(tmp_path / "p")
    d = json.loads((out / directory.MODEL_CONFIG).read_text())
    d["format_version"] = 99
    (out / directory.MODEL_CONFIG).write_text(json.dumps(d))
    with pytest.raises(PipelineFileError, match=rf"format_version 99, newer than this ddpm_ms reads \({directory.FORMAT_VERSION}\)"):
        DiffusionPipeline.from_pretrained(out)


def test_a_run_written_before_the_pipeline_loads_and_samples(tmp_path):
    run = shutil.copytree(FIXTURE_RUN, tmp_path / "run_v1")
    old = json.loads((run / "config.json").read_text())
    assert "format_version" not in old and "guidance_scale" in old["train"], "the fixture is in the old format"
    pipe = DiffusionPipeline.from_pretrained(run)
    assert (pipe.sampling.guidance_scale, pipe.sampling.guidance_interval) == (2.0, (0, 700))
    assert pipe.model_config.arch == "unet" and pipe.loaded_weights == "ema" and pipe.checkpoint_step == 1
    pipe.jit = False
    images = pipe(num_images=2, num_inference_steps=2, class_labels="bag", seed=0, progress=False).images
    assert images.shape == (2, 1, 28, 28) and np.isfinite(images).all()


@pytest.mark.slow
def test_a_run_written_before_the_pipeline_resumes(tmp_path):
    run = shutil.copytree(FIXTURE_RUN, tmp_path / "run_v1")
    cfg = Config.load(run)
    trainer = Trainer(cfg, run, progress=False, resume=True)
    assert trainer.step == 1
    summary = trainer.fit()
    assert summary["steps"] == 2 and (run / "checkpoints" / "final.ckpt").is_file()
    saved = json.loads((run / "config.json").read_text())
    assert saved["format_version"] == CONFIG_FORMAT and saved["sampling"]["guidance_scale"] == 2.0
    assert "guidance_scale" not in saved["train"], "the resumed run's config is rewritten in the new format"
