"""MindIR export: one graph of MindSpore's own ops (no CPU kernel, no random op) with a dynamic
batch and classifier-free guidance inside, written in a fresh process; every scheduler sampling
the loaded graph gives the images the model Cell gives on the same noise."""
import json
from collections import Counter

import mindspore as ms
import numpy as np
import pytest

from ddpm_ms.config import DiffusionConfig, SamplingConfig, backbone_config
from ddpm_ms.models import build_model
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms.pipeline.mindir import MINDIR, MindIRDenoiser, export_in_subprocess, export_mindir
from tiny_models import ARCHS, TINY, wake

RANDOM_OPS = {"StandardNormal", "UniformReal", "Dropout", "DropoutGenMask", "DropoutDoMask", "RandomStandardNormal",
              "Multinomial", "UniformInt", "RandomChoiceWithMask"}


def graph_ops(path) -> Counter:
    """Primitive name -> count in a MindIR file (nodes are named "REF::Name:id")."""
    from mindspore.train import mind_ir_pb2

    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(path.read_bytes())
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return Counter(n.op_type.split("::")[-1].split(":")[0] for n in nodes if n.op_type.startswith("REF::"))


def _pipeline_dir(tmp_path, arch, num_classes, monkeypatch):
    """A woken tiny model of `arch` written as a pipeline directory (built with the CPU kernels)."""
    fields = {**TINY[arch], "image_size": (16, 16), "channels": 1, "num_classes": num_classes}
    if arch == "ddpm_unet":
        fields.update(attn_resolutions=(8,), dropout=0.1)  # attention and dropout both in the model
    cfg = backbone_config(**fields)
    ms.set_seed(0)
    model = wake(build_model(cfg))
    pipe = DiffusionPipeline(model, cfg, DiffusionConfig(timesteps=100, beta_schedule="cosine"),
                             SamplingConfig(guidance_scale=2.0 if num_classes else 1.0,
                                            guidance_interval=(0, 60) if num_classes else None),
                             dataset="fashion_mnist" if num_classes else None)
    out = pipe.save_pretrained(tmp_path / f"{arch}-{num_classes}")
    export_in_subprocess(out, out)
    monkeypatch.setenv("DDPM_MS_KERNELS", "native")  # the Cell formulation the file holds, for an exact comparison
    return out, DiffusionPipeline.from_pretrained(out)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_graph_samples_what_the_cell_samples_with_every_scheduler(arch, tmp_path, monkeypatch):
    out, cell = _pipeline_dir(tmp_path, arch, 10, monkeypatch)
    graph = DiffusionPipeline.from_pretrained(out, mindir=True)
    assert isinstance(graph.model, MindIRDenoiser) and graph.loaded_weights == "mindir"
    ops = graph_ops(out / MINDIR)
    assert "Custom" not in ops and not RANDOM_OPS & set(ops), ops
    for sampler, steps in (("ddpm", 12), ("ddim", 8), ("dpm++", 6), ("dpm++sde", 6)):
        a = cell(5, sampler=sampler, num_inference_steps=steps, seed=3, progress=False, batch_size=5)
        b = graph(5, sampler=sampler, num_inference_steps=steps, seed=3, progress=False, batch_size=5)
        np.testing.assert_array_equal(a.labels, b.labels)
        diff = np.abs(a.images - b.images).max()
        assert diff < 1e-4, (sampler, diff)  # guided inside the interval, conditional outside it
    # the guidance weight is an input: another w changes the images, as it does for the Cell
    c = graph(5, sampler="ddim", num_inference_steps=8, seed=3, progress=False, guidance_scale=4.0)
    d = cell(5, sampler="ddim", num_inference_steps=8, seed=3, progress=False, guidance_scale=4.0)
    np.testing.assert_allclose(c.images, d.images, atol=1e-4)
    assert np.abs(c.images - a.images).max() > 1e-2


def test_dynamic_batch_and_the_unconditional_graph(tmp_path, monkeypatch, rng):
    out, cell = _pipeline_dir(tmp_path, "ddpm_unet", 0, monkeypatch)
    info = json.loads((out / "denoiser_mindir.json").read_text())
    assert info["inputs"] == ["x", "t"] and info["image_shape"] == [1, 16, 16]
    graph = MindIRDenoiser(out / MINDIR)
    for b in (1, 4, 7):  # one file, any batch
        x = ms.Tensor(rng.standard_normal((b, 1, 16, 16), dtype=np.float32))
        t = ms.Tensor(rng.integers(0, 100, b).astype(np.int32))
        np.testing.assert_allclose(graph(x, t).asnumpy(), cell.model(x, t).asnumpy(), atol=1e-5)


def test_a_model_with_cpu_kernels_is_refused(tmp_path):
    from ddpm_ms import kernels
    if not kernels.available():
        pytest.skip(f"CPU kernels cannot be built here: {kernels.why_unavailable()}")
    cfg = backbone_config(**TINY["unet"], image_size=(16, 16), channels=1)
    pipe = DiffusionPipeline(build_model(cfg), cfg, DiffusionConfig(timesteps=100))
    with pytest.raises(ValueError, match="DDPM_MS_KERNELS=native"):
        export_mindir(pipe, tmp_path)


def test_guidance_the_graph_cannot_do_is_named(tmp_path, monkeypatch):
    out, _ = _pipeline_dir(tmp_path, "unet", 10, monkeypatch)
    graph = DiffusionPipeline.from_pretrained(out, mindir=True)
    with pytest.raises(ValueError, match="exported MindIR denoiser takes the guidance scale only"):
        graph(2, num_inference_steps=3, guidance=graph.guidance(guidance_rescale=0.7), progress=False)
    with pytest.raises(FileNotFoundError, match="export.py --format mindir"):
        DiffusionPipeline.from_pretrained(tmp_path / "nothing", mindir=True)


def test_export_and_sample_commands(tmp_path, capsys):
    """export.py --format mindir on a run writes the pipeline directory and its graph; sample.py
    --model DIR --mindir draws from the graph; --mindir without a pipeline directory is one line."""
    import mindspore.dataset as ds

    from ddpm_ms.cli.export import main as export
    from ddpm_ms.cli.sample import main as sample
    from ddpm_ms.config import Config, DataConfig, TrainConfig
    from ddpm_ms.data import load_idx_dataset
    from ddpm_ms.training import Trainer

    images, labels = load_idx_dataset("fashion_mnist")
    data = ds.NumpySlicesDataset({"image": images[:16, None].astype(np.float32) / 127.5 - 1.0,
                                  "label": labels[:16].astype(np.int32)}, shuffle=False).batch(8, drop_remainder=True)
    cfg = Config(preset="tiny", model=backbone_config(**TINY["unet"], image_size=(28, 28), channels=1, num_classes=10),
                 diffusion=DiffusionConfig(timesteps=50), data=DataConfig(dataset="fashion_mnist"),
                 train=TrainConfig(batch_size=8, steps=2, save_every=2, num_samples=2, sample_steps=2, device="CPU"),
                 sampling=SamplingConfig(guidance_scale=2.0))
    Trainer(cfg, tmp_path / "run", dataset=data, progress=False).fit()
    out = tmp_path / "model"
    assert export(["--run", str(tmp_path / "run"), "--to", str(out), "--format", "mindir"]) == 0
    assert "mindir:" in capsys.readouterr().out and (out / MINDIR).is_file()
    grid = tmp_path / "grid.png"
    assert sample(["--model", str(out), "--mindir", "--num", "4", "--steps", "3", "--out", str(grid),
                   "--no-progress"]) == 0
    assert grid.is_file()
    assert sample(["--run", str(tmp_path / "run"), "--mindir", "--no-progress"]) == 2
    assert "--mindir samples a pipeline directory's exported graph" in capsys.readouterr().err
