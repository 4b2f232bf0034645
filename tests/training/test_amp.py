"""Mixed precision: what each device can run (and the one message when it cannot), which layers
each level casts on GPU and Ascend, and bfloat16 inside the C++ kernels on CPU, whose training
follows float32's."""
import csv

import numpy as np
import pytest

from ddpm_ms import kernels

from ddpm_ms.models import DiTConfig, UNet, UNetConfig, build_model
from ddpm_ms.training.amp import apply_amp, compute_dtypes, loss_scaler, resolve_amp
from tiny_models import tiny_model


def test_amp_on_a_gpu_without_bfloat16_falls_back_to_float16(monkeypatch):
    from ddpm_ms.training import amp

    monkeypatch.setattr(amp, "_gpu_has_bf16", lambda: False)
    level, dtype, note = resolve_amp("O2", "bfloat16", "GPU")
    assert (level, dtype) == ("O2", "float16") and "compute capability 8.0" in note and "float16" in note
    monkeypatch.setattr(amp, "_gpu_has_bf16", lambda: True)
    assert resolve_amp("O2", "bfloat16", "GPU") == ("O2", "bfloat16", None)


def test_bfloat16_on_cpu_needs_the_instructions_and_the_kernels(monkeypatch):
    from ddpm_ms import kernels

    monkeypatch.setattr(kernels, "cpu_has_bf16", lambda: False)
    level, _, note = resolve_amp("O1", "bfloat16", "CPU")
    assert level == "O0" and "neither avx512_bf16 nor amx_bf16" in note and "float32 (O0) instead" in note
    monkeypatch.setattr(kernels, "cpu_has_bf16", lambda: True)
    if kernels.available():
        assert resolve_amp("O1", "bfloat16", "CPU") == ("O1", "bfloat16", None)
        level, _, note = resolve_amp("O2", "bfloat16", "CPU")
        assert level == "O1" and "runs as O1" in note
    monkeypatch.setenv("DDPM_MS_KERNELS", "im2col")
    level, _, note = resolve_amp("O1", "bfloat16", "CPU")
    assert level == "O0" and "C++ kernels, which are off" in note


@pytest.mark.skipif(not kernels.available(), reason=f"CPU kernels cannot be built here: {kernels.why_unavailable()}")
def test_amp_on_cpu_switches_the_kernels_and_casts_nothing():
    for arch in ("unet", "dit"):
        model = apply_amp(tiny_model(arch), "O1", "bfloat16", "CPU")
        assert set(compute_dtypes(model).values()) == {None}
        switched = {type(c).__name__ for _, c in model.cells_and_names() if getattr(c, "matmul_dtype", None) == "bfloat16"}
        left = {type(c).__name__ for _, c in model.cells_and_names() if getattr(c, "matmul_dtype", None) == "float32"}
        assert {"Dense"} <= switched and not left
        assert ({"Conv2d", "BatchMatMul"} if arch == "unet" else {"PatchEmbed"}) <= switched


def test_amp_levels_cast_the_right_layers():
    o1 = compute_dtypes(apply_amp(UNet(UNetConfig(image_size=(8, 8), dim=8, dim_mults=(1, 2))), "O1", "float16", "GPU"))
    o2 = compute_dtypes(apply_amp(UNet(UNetConfig(image_size=(8, 8), dim=8, dim_mults=(1, 2))), "O2", "bfloat16", "GPU"))
    assert o1["init_conv"] == "float16" and o1["final_conv"] == "float16"
    assert all(v == "float32" for k, v in o1.items() if k.endswith("norm") or k.endswith("softmax"))
    assert o1["mid_block1.mlp.1"] == "float16" and o1["mid_block1"] is None  # the rest takes what it gets
    assert o2[""] == "bfloat16"
    norms = [k for k in o2 if k.endswith("norm")]
    softmaxes = [k for k in o2 if "softmax" in k]
    assert norms and softmaxes and all(o2[k] == "float32" for k in norms + softmaxes)
    dit = DiTConfig(image_size=(8, 8), patch_size=4, hidden_size=16, depth=1, attn_heads=2)
    o1, o2 = (compute_dtypes(apply_amp(build_model(dit), level, "float16", "GPU")) for level in ("O1", "O2"))
    assert o1["x_embedder"] == o1["blocks.0.attn.qkv"] == o1["final_layer.linear"] == "float16"
    assert o1["blocks.0.norm1"] == o1["blocks.0.attn.attend"] == "float32" and o1["blocks.0.mlp.1"] is None
    assert o2[""] == "float16" and o2["blocks.0.norm1"] == o2["blocks.0.attn.attend"] == "float32"
    assert loss_scaler("O2", "bfloat16", 2.0 ** 16) is None  # bfloat16 has float32's range
    assert float(loss_scaler("O1", "float16", 1024.0).scale_value.asnumpy()) == 1024.0
    assert loss_scaler("O0", "float16", 1024.0) is None


@pytest.mark.slow
@pytest.mark.skipif(not (kernels.available() and kernels.cpu_has_bf16()),
                    reason="needs the CPU kernels and a CPU with AVX512-BF16 or AMX")
def test_bfloat16_training_follows_float32(tmp_path):
    """200 updates of a small U-Net on Fashion-MNIST from the same seed, data order, timesteps and
    noise: with bfloat16 products the mean loss over updates 150-200 is within 3% of float32's."""
    import mindspore.dataset as ds
    import mindspore.dataset.vision as vision
    from ddpm_ms.config import Config, DataConfig, DiffusionConfig, TrainConfig
    from ddpm_ms.data import load_idx_dataset
    from ddpm_ms.training import Trainer

    images, _ = load_idx_dataset("fashion_mnist")
    mean_loss = {}
    for amp in ("O0", "O1"):
        ds.config.set_seed(0)
        data = ds.NumpySlicesDataset({"image": images[:1600, :, :, None]}, shuffle=True)
        data = data.map([vision.Rescale(1 / 127.5, -1.0), vision.HWC2CHW()], input_columns=["image"]).batch(16)
        cfg = Config(preset="tiny", model=UNetConfig(image_size=(28, 28), channels=1, dim=8, dim_mults=(1, 2)),
                     diffusion=DiffusionConfig(timesteps=1000, beta_schedule="cosine", p2_gamma=0.5),
                     data=DataConfig(dataset="fashion_mnist"),
                     train=TrainConfig(batch_size=16, lr=2e-3, steps=200, log_every=1, save_every=1000, num_samples=1,
                                       sample_every=1000, device="CPU", seed=0, amp=amp, amp_dtype="bfloat16"))
        trainer = Trainer(cfg, tmp_path / amp, dataset=data, progress=False)
        assert trainer.amp_level == amp
        trainer.fit()
        with open(tmp_path / amp / "log.csv") as f:
            losses = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}
        mean_loss[amp] = np.mean([losses[s] for s in range(150, 201)])
    assert mean_loss["O1"] != mean_loss["O0"]  # the products did change
    assert abs(mean_loss["O1"] / mean_loss["O0"] - 1) < 0.03, mean_loss
