"""Runs and pipeline directories written before each backbone had its own config class (config format
2, pipeline format 1: one flat model section listing every backbone's fields) still load, sample what
they sampled then, resume, and are written back in the current format. The fixtures were written by
that code (tests/fixtures/README.md)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ddpm_ms.config import CONFIG_FORMAT, Config, FLAT_MODEL_FIELDS
from ddpm_ms.models import DiTConfig, UNetConfig
from ddpm_ms.pipeline import FORMAT_VERSION, DiffusionPipeline
from ddpm_ms.pipeline import directory
from ddpm_ms.pipeline.diffusion_pipeline import PRETRAINED_DIR
from ddpm_ms.training import Trainer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BEFORE = np.load(FIXTURES / "images_before_format_bump.npz")


def draw(pipe):
    """What the fixtures recorded: 4 images, the pipeline's default sampler with 5 steps, seed 0."""
    return pipe(num_images=4, num_inference_steps=5, seed=0, progress=False).images


def test_the_fixtures_are_in_the_old_formats():
    run = json.loads((FIXTURES / "run_v2" / "config.json").read_text())
    assert run["format_version"] == 2 and set(run["model"]) == set(FLAT_MODEL_FIELDS)
    dit = json.loads((FIXTURES / "pipeline_v1_dit" / directory.MODEL_CONFIG).read_text())
    assert dit["format_version"] == 1 and set(FLAT_MODEL_FIELDS) <= set(dit)  # a DiT with the U-Nets' fields
    shipped = json.loads((FIXTURES / "pipeline_v1_shipped" / directory.MODEL_CONFIG).read_text())
    assert shipped["format_version"] == 1 and shipped["arch"] == "unet"


def test_a_format_2_run_config_keeps_its_backbones_fields():
    cfg = Config.load(FIXTURES / "run_v2")
    assert cfg.model == DiTConfig(image_size=(28, 28), channels=1, num_classes=10, patch_size=4, hidden_size=16,
                                  depth=1, attn_heads=2, mlp_ratio=4.0)
    assert cfg.to_dict()["format_version"] == CONFIG_FORMAT
    assert set(cfg.to_dict()["model"]) == {"arch", "image_size", "channels", "num_classes", "patch_size",
                                           "hidden_size", "depth", "attn_heads", "mlp_ratio"}


def test_an_unknown_key_in_an_old_model_section_is_still_refused(tmp_path):
    d = json.loads((FIXTURES / "run_v2" / "config.json").read_text())
    d["model"]["hidden_sise"] = 32
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"section 'model' has unknown keys \['hidden_sise'\]"):
        Config.load(tmp_path)


def test_a_format_2_run_samples_what_it_sampled(tmp_path):
    pipe = DiffusionPipeline.from_pretrained(shutil.copytree(FIXTURES / "run_v2", tmp_path / "run"))
    assert isinstance(pipe.model_config, DiTConfig) and pipe.checkpoint_step == 1
    np.testing.assert_allclose(draw(pipe), BEFORE["run_v2"], atol=1e-5)


@pytest.mark.slow
def test_a_format_2_run_resumes_and_is_rewritten_in_the_current_format(tmp_path):
    run = shutil.copytree(FIXTURES / "run_v2", tmp_path / "run")
    trainer = Trainer(Config.load(run), run, progress=False, resume=True)
    assert trainer.step == 1
    assert trainer.fit()["steps"] == 2
    saved = json.loads((run / "config.json").read_text())
    assert saved["format_version"] == CONFIG_FORMAT and "dim_mults" not in saved["model"]
    assert saved["model"]["hidden_size"] == 16


def test_a_format_1_pipeline_directory_loads_samples_and_is_saved_in_the_current_format(tmp_path):
    pipe = DiffusionPipeline.from_pretrained(FIXTURES / "pipeline_v1_dit")
    assert isinstance(pipe.model_config, DiTConfig)
    np.testing.assert_allclose(draw(pipe), BEFORE["dit"], atol=1e-5)
    out = pipe.save_pretrained(tmp_path / "again")
    model = json.loads((out / directory.MODEL_CONFIG).read_text())
    assert model["format_version"] == FORMAT_VERSION and "dim" not in model and model["_class_name"] == "DiT"
    again = DiffusionPipeline.from_pretrained(out)
    assert again.model_config == pipe.model_config
    np.testing.assert_array_equal(draw(again), draw(pipe))


def test_the_shipped_pipeline_in_its_old_format_samples_what_it_sampled(tmp_path):
    old = tmp_path / "shipped_v1"
    shutil.copytree(FIXTURES / "pipeline_v1_shipped", old)
    shutil.copy(PRETRAINED_DIR / "fashion_mnist" / directory.WEIGHTS, old / directory.WEIGHTS)
    pipe = DiffusionPipeline.from_pretrained(old)
    assert isinstance(pipe.model_config, UNetConfig)
    np.testing.assert_allclose(draw(pipe), BEFORE["shipped"], atol=1e-5)
    now = DiffusionPipeline.from_pretrained("fashion_mnist")
    assert now.model_config == pipe.model_config and now.sampling == pipe.sampling
    np.testing.assert_allclose(draw(now), BEFORE["shipped"], atol=1e-5)
