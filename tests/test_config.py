"""Config JSON round trip, presets and validation messages."""
import json

import pytest

from ddpm_ms.config import Config
from ddpm_ms.presets import PRESETS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    cfg = preset(name)
    cfg.save(tmp_path / "config.json")
    again = Config.load(tmp_path)
    assert again == cfg
    assert isinstance(again.model.image_size, tuple)
    assert all(isinstance(v, tuple) for v in vars(again.model).values() if isinstance(v, (list, tuple)))


def test_unknown_key_is_named(tmp_path):
    d = preset("fashion_mnist").to_dict()
    d["model"]["width"] = 3
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="width"):
        Config.load(tmp_path)


@pytest.mark.parametrize("section,key,value,match", [
    ("diffusion", "beta_schedule", "exp", "beta_schedule"),
    ("diffusion", "loss_type", "l3", "loss_type"),
    ("diffusion", "min_snr_gamma", -1.0, "min_snr_gamma"),
    ("model", "block", "vit", "block"),
    ("train", "batch_size", 0, "batch_size"),
    ("train", "mode", "eager", "mode"),
    ("train", "sample_steps", 5000, "sample_steps"),
    ("model", "num_classes", -1, "num_classes"),
    ("diffusion", "cond_drop_prob", 1.0, "cond_drop_prob"),
    ("sampling", "guidance_scale", -0.5, "guidance_scale"),
    ("sampling", "sampler", "euler", "sampler"),
    ("model", "arch", "vit", "arch"),
])
def test_validation_names_the_field(section, key, value, match):
    cfg = preset("fashion_mnist")
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_missing_config_says_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Config.load(tmp_path)


def test_preset_copies_are_independent():
    a = preset("fashion_mnist")
    a.train.lr = 1.0
    assert preset("fashion_mnist").train.lr != 1.0
    with pytest.raises(ValueError, match="unknown preset"):
        preset("cifar100")


def test_an_image_folder_model_cannot_be_class_conditional():
    cfg = preset("cats")
    cfg.model.num_classes = 2
    with pytest.raises(ValueError, match="no class labels"):
        cfg.validate()
