"""The training loop: a compiled step (forward, loss, gradients, Adam update), logs, checkpoints
and pictures, all written into one self-describing run directory."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn, ops
from tqdm.auto import tqdm

from ddpm_ms.config import Config
from ddpm_ms.data import build_dataset
from ddpm_ms.device import select_device
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.models import UNet, count_parameters
from ddpm_ms.sampling import DDPMScheduler, sample
from ddpm_ms.training.checkpoint import save_checkpoint
from ddpm_ms import viz

LOG_FIELDS = ["step", "epoch", "loss", "img_per_s", "elapsed_s"]


class NonFiniteLoss(FloatingPointError):
    pass


def make_train_step(diffusion: GaussianDiffusion, optimizer: nn.Optimizer, jit: bool = True):
    """loss = step(x0, t, noise): forward, loss, value_and_grad and the optimizer update,
    compiled as one graph when `jit`."""
    grad_fn = ms.value_and_grad(diffusion, None, optimizer.parameters)

    def train_step(x0, t, noise):
        loss, grads = grad_fn(x0, t, noise)
        return ops.depend(loss, optimizer(grads))

    return ms.jit(train_step) if jit else train_step


def prepare_run_dir(out) -> Path:
    """Create `out`; refuse one that already holds a run, so nothing is overwritten."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new --out "
                              "(runs are never overwritten)")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    return out


class Trainer:
    """Trains `cfg` into the run directory `out`. `dataset` overrides the config's pipeline."""

    def __init__(self, cfg: Config, out, dataset=None, progress: bool = True):
        self.cfg = cfg.validate()
        self.device = select_device(cfg.train.device)
        ms.set_seed(cfg.train.seed)
        ds.config.set_seed(cfg.train.seed)  # shuffling and random flips
        self.rng = np.random.default_rng(cfg.train.seed)
        self.progress = progress
        self.model = UNet(cfg.model)
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        d = cfg.diffusion
        self.diffusion = GaussianDiffusion(self.model, self.schedule, d.objective, d.loss_type, d.p2_gamma, d.p2_k)
        self.optimizer = nn.Adam(self.model.trainable_params(), learning_rate=cfg.train.lr)
        self.train_step = make_train_step(self.diffusion, self.optimizer, jit=cfg.train.mode == "graph")
        self.dataset = dataset if dataset is not None else build_dataset(cfg.data, cfg.model, cfg.train.batch_size)
        self.steps_per_epoch = self.dataset.get_dataset_size()
        if self.steps_per_epoch < 1:
            raise ValueError("the data set yields no full batch: lower --batch-size or add images")
        self.total_steps = cfg.train.steps or cfg.train.epochs * self.steps_per_epoch
        self.out = prepare_run_dir(out)
        cfg.save(self.out / "config.json")
        self.step, self.epoch = 0, 0
        self.ckpt = None

    # -- pictures -----------------------------------------------------------------------------
    def scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(self.schedule, prediction_type=self.cfg.diffusion.objective,
                             variance_type=self.cfg.train.variance, clip_sample=True)

    def sample_images(self, trajectory_every=None):
        t = self.cfg.train
        shape = (t.num_samples, self.cfg.model.channels, *self.cfg.model.image_size)
        return sample(self.model, self.scheduler(), shape, t.sample_steps, seed=t.seed,
                      trajectory_every=trajectory_every, jit=t.mode == "graph", progress=self.progress)

    def save_samples(self, name: str) -> Path:
        images, _ = self.sample_images()
        return viz.save_grid(images, self.out / "samples" / f"{name}.png")

    # -- the loop -----------------------------------------------------------------------------
    def _batch_noise(self, x0_shape):
        t = self.rng.integers(0, self.schedule.timesteps, size=(x0_shape[0],), dtype=np.int32)
        noise = self.rng.standard_normal(x0_shape, dtype=np.float32)
        return ms.Tensor(t), ms.Tensor(noise)

    def _save(self, name, epoch):
        self.ckpt = save_checkpoint(self.model, self.out / "checkpoints" / name,
                                    {"step": self.step, "epoch": epoch})

    def _check_finite(self, loss):
        if not math.isfinite(loss):
            kept = f"the last good checkpoint is {self.ckpt}" if self.ckpt else "no checkpoint was written"
            raise NonFiniteLoss(f"loss became {loss} at step {self.step}; {kept}. "
                                f"Lower the learning rate (now {self.cfg.train.lr:g}) and train again.")

    def _pictures(self, name):
        self.save_samples(name)
        viz.plot_loss(self.out / "log.csv", self.out / "loss.png", f"{self.cfg.preset}: training loss")

    def fit(self) -> dict:
        """Train for the configured steps or epochs; returns a summary (also written to summary.json).
        Ctrl-C saves a checkpoint of the current step before it stops."""
        start = time.time()
        try:
            epoch, compile_s = self._loop(start)
        except KeyboardInterrupt:
            self._save(f"step_{self.step:07d}.ckpt", self.epoch)
            print(f"\ninterrupted at step {self.step}; saved {self.ckpt}")
            raise
        return self._finish(epoch, compile_s, start)

    def _loop(self, start):
        t_cfg = self.cfg.train
        window = _SpeedWindow()
        compile_s, epoch = None, 0
        bar = tqdm(total=self.total_steps, desc=f"train {self.cfg.preset}", disable=not self.progress,
                   dynamic_ncols=True)
        self.model.set_train(True)
        with open(self.out / "log.csv", "w", newline="") as f, bar:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            while self.step < self.total_steps:
                epoch += 1
                self.epoch = epoch
                tic = time.perf_counter()
                for (x0,) in self.dataset.create_tuple_iterator(num_epochs=1):
                    t, noise = self._batch_noise(x0.shape)
                    loss = float(self.train_step(x0, t, noise).asnumpy())
                    self.step += 1
                    self._check_finite(loss)
                    toc = time.perf_counter()  # the interval includes reading the batch
                    if compile_s is None:
                        compile_s = toc - tic  # the first call compiles the graph
                        window.losses.append(loss)
                    else:
                        window.add(loss, x0.shape[0], toc - tic)
                    bar.update(1)
                    if self.step % t_cfg.log_every == 0 or self.step == self.total_steps:
                        writer.writerow(window.row(self.step, epoch, time.time() - start))
                        f.flush()
                        bar.set_postfix(loss=f"{window.mean_loss:.4f}", img_s=f"{window.speed:.1f}")
                        window = _SpeedWindow()
                    if self.step % t_cfg.save_every == 0:
                        self._save(f"step_{self.step:07d}.ckpt", epoch)
                    if self.step >= self.total_steps:
                        break
                    if t_cfg.sample_every and self.step % t_cfg.sample_every == 0:
                        self._pictures(f"step_{self.step:07d}")
                    tic = time.perf_counter()  # pictures and checkpoints are not training time
                if not t_cfg.sample_every and self.step < self.total_steps:
                    self._pictures(f"epoch_{epoch:03d}")
        return epoch, compile_s

    def _finish(self, epoch, compile_s, start):
        """Final checkpoint, loss curve, the final grid and its denoising GIF, summary.json."""
        t_cfg = self.cfg.train
        self._save("final.ckpt", epoch)
        train_s = time.time() - start
        viz.plot_loss(self.out / "log.csv", self.out / "loss.png", f"{self.cfg.preset}: training loss")
        images, trajectory = self.sample_images(trajectory_every=max(1, t_cfg.sample_steps // 50))
        viz.save_grid(images, self.out / "samples" / "final.png")
        # This is also the run's last periodic grid: same model, same seed.
        periodic = f"step_{self.step:07d}" if t_cfg.sample_every else f"epoch_{epoch:03d}"
        viz.save_grid(images, self.out / "samples" / f"{periodic}.png")
        viz.save_denoising_gif(trajectory, self.out / "denoising.gif", nrow=None, max_images=t_cfg.num_samples)
        log = viz.read_log(self.out / "log.csv")
        speeds = log["img_per_s"][log["img_per_s"] > 0] if log else []
        summary = {"preset": self.cfg.preset, "device": self.device, "mode": t_cfg.mode, "steps": self.step,
                   "epochs": epoch, "parameters": count_parameters(self.model), "batch_size": t_cfg.batch_size,
                   "final_loss": float(log["loss"][-1]) if log else None,
                   "img_per_s": float(np.median(speeds)) if len(speeds) else None,
                   "compile_s": compile_s, "train_wall_s": train_s, "total_wall_s": time.time() - start,
                   "checkpoint": str(self.ckpt), "grid": str(self.out / "samples" / "final.png"),
                   "gif": str(self.out / "denoising.gif")}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


class _SpeedWindow:
    """Losses and throughput between two rows of log.csv."""

    def __init__(self):
        self.losses, self.images, self.seconds = [], 0, 0.0

    def add(self, loss, images, seconds):
        self.losses.append(loss)
        self.images += images
        self.seconds += seconds

    @property
    def mean_loss(self):
        return float(np.mean(self.losses))

    @property
    def speed(self):
        return self.images / self.seconds if self.seconds else 0.0

    def row(self, step, epoch, elapsed):
        return {"step": step, "epoch": epoch, "loss": f"{self.mean_loss:.6f}", "img_per_s": f"{self.speed:.2f}",
                "elapsed_s": f"{elapsed:.1f}"}
