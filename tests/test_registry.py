"""The extension points: a toy sampler, a toy backbone and a toy data set, each added from this module
alone, go through everything the built-in ones do (config validation, the command lines' choices,
train, sample, the pipeline directory, evaluation), and the registries refuse what they cannot use."""
import json
from dataclasses import dataclass
from typing import ClassVar

import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import nn, ops

from ddpm_ms.cli import sample as sample_cli
from ddpm_ms.cli import train as train_cli
from ddpm_ms.web_demo import sampler_menu
from ddpm_ms.cli.evaluate import main as evaluate_main
from ddpm_ms.cli.train_classifier import main as train_classifier_main
from ddpm_ms.config import (Config, DataConfig, DiffusionConfig, ModelConfig, SamplingConfig, TrainConfig,
                            backbone_config)
from ddpm_ms.data.transforms import finish
from ddpm_ms.diffusion import NoiseSchedule
from ddpm_ms.models import build_model
from ddpm_ms.models.layers import Conv2d, Dense, SinusoidalTimeEmbedding, add_label
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.pipeline import directory as pipeline_directory
from ddpm_ms.registry import (BACKBONES, DATASETS, SAMPLERS, Backbone, Dataset, Registry, Sampler, UnknownName)
from ddpm_ms.sampling import make_scheduler, sample
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput
from ddpm_ms.training import Trainer


# -- a toy sampler: Euler's method on the probability-flow ODE ------------------------------------
class EulerScheduler(Scheduler):
    """Euler steps in z = x / sqrt(alpha-bar), whose ODE is dz / dsigma = eps with sigma = sqrt((1 - ab) / ab)."""

    def default_inference_steps(self) -> int:
        return min(50, self.num_train_timesteps)

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        ab, ab_prev = self.alpha_bar(timestep), self.alpha_bar(self.previous_timestep(timestep))
        x0 = self.predict_x0(model_output, timestep, sample)
        eps = self.eps_from_x0(x0, timestep, sample)
        sigma, sigma_prev = np.sqrt((1 - ab) / ab), np.sqrt((1 - ab_prev) / ab_prev)
        z = sample / float(np.sqrt(ab)) + float(sigma_prev - sigma) * eps
        return SchedulerOutput(prev_sample=float(np.sqrt(ab_prev)) * z, pred_original_sample=x0)


# -- a toy backbone: two convolutions around the time (and label) embedding ------------------------
@dataclass
class ToyConfig(ModelConfig):
    arch: str = "toy_conv"
    flags: ClassVar[dict] = {"--toy-width": ("width", "channels of the toy network")}
    width: int = 8

    def validate(self) -> None:
        super().validate()
        if int(self.width) < 1:
            raise ValueError(f"model.width must be >= 1, got {self.width}")


class ToyNet(nn.Cell):
    label_table, time_bias = "class_emb.embedding_table", "time_mlp.3.bias"

    def __init__(self, config: ToyConfig):
        super().__init__()
        w = config.width
        self.time_mlp = nn.SequentialCell(SinusoidalTimeEmbedding(w), Dense(w, w), nn.SiLU(), Dense(w, w))
        self.num_classes = int(config.num_classes)
        if self.num_classes:
            self.class_emb = nn.Embedding(self.num_classes + 1, w)
        self.conv_in = Conv2d(config.channels, w, 3, padding=1)
        self.conv_out = Conv2d(w, config.channels, 3, padding=1)

    def construct(self, x, t, y=None):
        c = self.time_mlp(t)
        if self.num_classes:
            c = add_label(c, self.class_emb, self.num_classes, y, x.shape[0])
        h = ops.silu(self.conv_in(x) + c.reshape(c.shape[0], -1, 1, 1))
        return self.conv_out(h)


# -- a toy data set: dark and light 8x8 squares, made here ------------------------------------------
def toy_arrays(split: str):
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = np.arange(64) % 2
    images = np.clip(rng.normal(64 + 128 * labels[:, None, None, None], 20, (64, 1, 8, 8)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def toy_load(data, image_shape, batch_size, split="train", shuffle=True, with_labels=False, num_shards=None,
             shard_id=None):
    images, labels = toy_arrays(split)
    source = ds.NumpySlicesDataset({"image": images.transpose(0, 2, 3, 1), "label": labels.astype(np.int32)},
                                   shuffle=shuffle)
    return finish(source, batch_size, data.random_flip, 1, ["image", "label"] if with_labels else ["image"], 1,
                  data.pad)


@pytest.fixture(scope="module")
def toys():
    """The three toys registered (from this module alone) for the module's tests, then taken out again."""
    entries = [(SAMPLERS, Sampler("euler", EulerScheduler, "Euler")),
               (BACKBONES, Backbone("toy_conv", ToyNet, ToyConfig, "toy net", tiny={"width": 4})),
               (DATASETS, Dataset("toy_squares", toy_load, "toy-squares", image_shape=(1, 8, 8),
                                  class_names=("dark", "light"), load_split=lambda root, split: toy_arrays(split),
                                  classifier="toy_squares_classifier.ckpt"))]
    for registry, entry in entries:
        registry.register(entry)
    yield
    for registry, entry in entries:
        registry.unregister(entry.name)


def toy_config(**train) -> Config:
    train = {"batch_size": 8, "steps": 4, "log_every": 1, "save_every": 4, "num_samples": 4, "sample_steps": 5,
             "device": "CPU", "eval_every": 4, "eval_num": 8, "eval_sampler": "euler", "eval_steps": 3, **train}
    return Config(preset="toys", model=ToyConfig(image_size=(8, 8), channels=1, num_classes=2, width=8),
                  diffusion=DiffusionConfig(timesteps=50, beta_schedule="cosine"),
                  data=DataConfig(dataset="toy_squares", random_flip=False),
                  train=TrainConfig(**train), sampling=SamplingConfig(sampler="euler", guidance_scale=2.0))


# -- the sampler ---------------------------------------------------------------------------------
def test_the_toy_sampler_is_euler_on_the_ode_which_is_ddim(toys):
    """DDIM with eta 0 is Euler's method on the same ODE in z: both must land on the same images."""
    net = build_model(backbone_config("toy_conv", image_size=(8, 8), channels=1, width=4))
    schedule = NoiseSchedule(100)
    images = {}
    for name in ("euler", "ddim"):
        scheduler = make_scheduler(name, schedule)
        scheduler.set_timesteps(10)
        images[name], _ = sample(net, scheduler, (4, 1, 8, 8), seed=3, progress=False)
    euler, ddim = images["euler"], images["ddim"]
    assert np.abs(euler).max() > 0.1
    np.testing.assert_allclose(euler, ddim, atol=1e-4)


def test_a_registered_sampler_is_a_choice_everywhere(toys, capsys):
    with pytest.raises(SystemExit):
        sample_cli.parser().parse_args(["--help"])
    assert "euler (Euler)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_cli.parser().parse_args(["--help"])
    assert "euler" in capsys.readouterr().out.split("--eval-sampler")[1]
    pipe = DiffusionPipeline.from_pretrained("fashion_mnist")
    assert "euler" in sampler_menu(pipe) and sampler_menu(pipe)[0] == pipe.sampling.sampler
    cfg = toy_config()
    cfg.validate()  # sampling.sampler and train.eval_sampler "euler" are valid names now


def test_a_sampler_option_belongs_to_the_samplers_that_declare_it(toys):
    pipe = DiffusionPipeline.from_pretrained("fashion_mnist")
    with pytest.raises(ValueError, match="eta applies to the ddim sampler"):
        pipe.scheduler("euler", eta=0.5)
    assert type(pipe.scheduler("euler")).__name__ == "EulerScheduler"


# -- the backbone --------------------------------------------------------------------------------
def test_a_registered_backbone_builds_from_its_config_and_takes_its_flags(toys, tmp_path, monkeypatch, capsys):
    cfg = backbone_config("toy_conv", image_size=(8, 8), width=4)
    assert isinstance(cfg, ToyConfig) and isinstance(build_model(cfg), ToyNet)
    with pytest.raises(SystemExit):
        train_cli.parser().parse_args(["--help"])
    assert "--toy-width" in capsys.readouterr().out
    toy_config().save(tmp_path / "toy.json")
    args = train_cli.parser().parse_args(["--config", str(tmp_path / "toy.json"), "--toy-width", "6"])
    assert train_cli.config_from_args(args).model.width == 6
    args = train_cli.parser().parse_args(["--toy-width", "6"])  # the default preset's U-Net has no width
    with pytest.raises(ValueError, match="--toy-width sizes a toy net; a U-Net takes --dim"):
        train_cli.config_from_args(args)


# -- the three together: train, sample, the pipeline directory, evaluation -------------------------
@pytest.fixture(scope="module")
def toy_run(toys, tmp_path_factory):
    """A classifier for the toy data (train_classifier.py), then a toy-backbone run on the toy data
    that evaluates with the toy sampler while it trains."""
    root = tmp_path_factory.mktemp("toys")
    mp = pytest.MonkeyPatch()
    mp.setenv("DDPM_MS_CLASSIFIER_DIR", str(root / "classifiers"))
    assert train_classifier_main(["--data", "toy_squares", "--max-steps", "3", "--epochs", "1", "--batch-size", "16",
                                  "--no-progress"]) == 0
    out = root / "run"
    summary = Trainer(toy_config(), out, progress=False).fit()
    yield root, out, summary
    mp.undo()


@pytest.mark.slow
def test_the_toys_train_and_evaluate_while_training(toy_run):
    _, out, summary = toy_run
    assert summary["steps"] == 4 and (out / "checkpoints" / "final.ckpt").is_file()
    record = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert record["sampler"] == "euler" and record["num"] == 8 and np.isfinite(record["fid"])
    assert json.loads((out / "config.json").read_text())["model"] == {
        "arch": "toy_conv", "image_size": [8, 8], "channels": 1, "num_classes": 2, "width": 8}


@pytest.fixture(scope="module")
def toy_pipe(toy_run):
    """The toy run as a pipeline directory, and what the run's pipeline draws before it is saved."""
    root, out, _ = toy_run
    pipe = DiffusionPipeline.from_pretrained(out)
    before = pipe(num_images=4, class_labels="light", seed=1, progress=False).images
    return pipe.save_pretrained(root / "pipe"), before


@pytest.mark.slow
def test_the_toys_go_through_a_pipeline_directory(toy_pipe):
    saved, before = toy_pipe
    assert json.loads((saved / pipeline_directory.MODEL_CONFIG).read_text())["_class_name"] == "ToyNet"
    assert json.loads((saved / pipeline_directory.SCHEDULER_CONFIG).read_text())["_class_name"] == "EulerScheduler"
    again = DiffusionPipeline.from_pretrained(saved)
    assert again.class_names == ["dark", "light"] and again.dataset == "toy_squares"
    np.testing.assert_array_equal(again(num_images=4, class_labels="light", seed=1, progress=False).images, before)


@pytest.mark.slow
def test_the_toys_are_scored_by_evaluate(toy_pipe, capsys):
    assert evaluate_main(["--model", str(toy_pipe[0]), "--num", "8", "--batch-size", "8", "--no-floor",
                          "--device", "CPU", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["reference"].startswith("toy_squares test") and record["sampler"] == "euler"
    assert record["num"] == 8 and np.isfinite(record["fid"])


# -- what the registries refuse -------------------------------------------------------------------
def test_unknown_names_are_one_line_naming_the_choices():
    with pytest.raises(UnknownName, match="unknown sampler 'heun'; choose one of ddpm, ddim, dpm\\+\\+, dpm\\+\\+sde"):
        SAMPLERS["heun"]
    with pytest.raises(ValueError, match="data.dataset must be one of"):
        DataConfig(dataset="imagenet").validate()
    with pytest.raises(ValueError, match=r"the dit backbone has no field\(s\) \['dim'\]"):
        backbone_config("dit", dim=16)
    with pytest.raises(TypeError, match="ModelConfig holds what every backbone shares"):
        ModelConfig()


def test_a_backbone_must_declare_its_label_parameters():
    class Unlabelled(nn.Cell):
        pass

    with pytest.raises(TypeError, match="must declare `label_table`"):
        Registry("backbone", "ddpm_ms.models", check=BACKBONES._check).register(Backbone("x", Unlabelled, ToyConfig))


def test_every_backbone_names_parameters_it_has():
    """The label table and time bias a backbone declares are real parameters of a conditional model, of
    the right shapes for folding one into the other (ddpm_ms.checkpoint.adapt_label_embedding)."""
    for arch in BACKBONES:
        entry = BACKBONES[arch]
        net = build_model(backbone_config(arch, **entry.tiny, image_size=(16, 16), num_classes=3))
        params = {name: p.shape for name, p in net.parameters_and_names()}
        assert params[net.label_table][0] == 4, arch
        assert params[net.label_table][1:] == params[net.time_bias], arch


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="a sampler named 'ddim' is already registered"):
        SAMPLERS.register(Sampler("ddim", EulerScheduler, "Euler"))
