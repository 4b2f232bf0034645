"""The Trainer: updates (the compiled step in training/step.py, driven by training/host_loop.py),
the EMA, and after each update the periodic events (training/events.py: log row, FID, checkpoint,
grid), all written into one self-describing run directory (training/run_dir.py) that a later run
can resume.

Resuming is exact: a checkpoint holds the weights, the EMA, the optimizer state, the step,
the epoch and how many batches of it were used, and the host RNG that draws timesteps, noise
and label drops (in the order host_loop.py documents). Each epoch's shuffle and flips come from
a dataset seed derived from (seed, epoch), so a resumed run reads the same batches in the same
order and skips the ones already used.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import shutil
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from tqdm.auto import tqdm

from ddpm_ms import viz
from ddpm_ms.config import Config, SamplingConfig
from ddpm_ms.data import build_dataset
from ddpm_ms.device import machine, select_device
from ddpm_ms.diffusion import GaussianDiffusion, NoiseSchedule
from ddpm_ms.metrics.evaluation import (FeatureExtractor, MetricsUnavailable, Reference, crop_margin, sample_and_score,
                                        scored_datasets)
from ddpm_ms.models import build_model, count_parameters
from ddpm_ms.pipeline import DiffusionPipeline
from ddpm_ms import checkpoint as ckpt_io
from ddpm_ms.training.amp import apply_amp, loss_scaler, resolve_amp
from ddpm_ms.training.ema import EMA
from ddpm_ms.training.events import Periodic
from ddpm_ms.training.host_loop import HostLoop, NonFiniteLoss
from ddpm_ms.training.optim import WarmupSchedule, build_optimizer, decoupled_decay
from ddpm_ms.training.parallel import AnyRank, DataParallel
from ddpm_ms.training.run_dir import LOG_FIELDS, RunDir, prepare_run_dir
from ddpm_ms.training.step import TrainStep, make_train_step

# Settings a resumed run may change: how long it runs and what it writes, not what it learns.
RESUMABLE_CHANGES = tuple(f"train.{k}" for k in (
    "epochs", "steps", "device", "mode", "save_every", "log_every", "sample_every", "num_samples",
    "sample_steps", "keep_last", "pin_every", "eval_every", "eval_num", "eval_sampler", "eval_steps")) + (
    "data.num_workers", "data.root", "data.strict") + tuple(
    f"sampling.{f.name}" for f in dataclasses.fields(SamplingConfig))

__all__ = ["LOG_FIELDS", "NonFiniteLoss", "Trainer", "make_train_step", "prepare_run_dir"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The dataset seed of one epoch: its own shuffle and flips, the same on every resume."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 32)


class Trainer:
    """Trains `cfg` into the run directory `out`.

    dataset: overrides the config's pipeline (a batched mindspore.dataset yielding "image", and
    "label" for a class-conditional model).
    resume: continue the run in `out` from its newest readable checkpoint.
    init_from: a checkpoint or run directory whose weights (EMA when it has them) start this
    run; the optimizer, step and data start afresh (fine-tuning).
    command: the command line that started the run, kept in summary.json (export.py puts it in the
    model card); a resumed run keeps the one it started with.
    distributed: this process is one worker of an msrun group (training/parallel.py): it reads its
    shard, averages gradients with the others, and only rank 0 writes into `out`.
    """

    def __init__(self, cfg: Config, out, dataset=None, progress: bool = True, resume: bool = False,
                 init_from=None, command: str | None = None, distributed: bool = False):
        self.cfg = cfg.validate()
        t = cfg.train
        self.device = select_device(t.device)
        self.parallel = DataParallel.join() if distributed else None
        self.is_main = self.parallel is None or self.parallel.is_main
        self.amp_level, self.amp_dtype, self.amp_note = resolve_amp(t.amp, t.amp_dtype, self.device)
        if self.amp_note:
            warnings.warn(self.amp_note, stacklevel=2)
        ms.set_seed(t.seed)
        self.rng = np.random.default_rng(t.seed)
        self.progress, self.command = progress, command
        self.jit = t.mode == "graph"

        if dataset is not None:
            self.dataset = dataset
        elif self.parallel is not None:
            self.dataset = build_dataset(cfg.data, cfg.model, self.parallel.local_batch(t.batch_size),
                                         num_shards=self.parallel.world, shard_id=self.parallel.rank)
        else:
            self.dataset = build_dataset(cfg.data, cfg.model, t.batch_size)
        self._check_data_fits()
        self.steps_per_epoch = self.dataset.get_dataset_size() // t.grad_accum
        if self.steps_per_epoch < 1:
            raise ValueError("the data set yields fewer batches than one update needs "
                             f"({t.grad_accum}); lower --batch-size or --grad-accum, or add images")
        self.total_steps = t.steps or t.epochs * self.steps_per_epoch
        self._evaluator = self._build_evaluator() if t.eval_every else None
        self.last_eval = None

        self.model = apply_amp(build_model(cfg.model), self.amp_level, self.amp_dtype, self.device)
        self.ema_model = build_model(cfg.model) if t.ema_decay > 0 else None
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        d = cfg.diffusion
        self.diffusion = GaussianDiffusion(self.model, self.schedule, d.objective, d.loss_type, d.p2_gamma, d.p2_k,
                                           d.min_snr_gamma)
        self.lr_schedule = WarmupSchedule(t.lr, t.lr_schedule, t.warmup_steps, self.total_steps)
        self.optimizer = build_optimizer(self.model.trainable_params(), self.lr_schedule, t.optimizer,
                                         t.weight_decay)
        self.scaler = loss_scaler(self.amp_level, self.amp_dtype, t.loss_scale)

        self.step, self.epoch, self.batch_in_epoch, self.elapsed = 0, 1, 0, 0.0
        self.ckpt, self.resumed_from, self.initialised_from = None, None, None
        if not resume and (init_from is not None or t.init_from):
            self._init_weights(init_from or t.init_from)
        self.ema = (EMA(self.model, self.ema_model, t.ema_decay, t.ema_update_every, t.ema_warmup, jit=self.jit)
                    if self.ema_model is not None else None)
        if self.is_main:
            self.run = RunDir.existing(out) if resume else RunDir.create(out, cfg)
        else:  # the other ranks write only into a scratch folder of their own (no checkpoints, no grids)
            self.run = RunDir.create(tempfile.mkdtemp(prefix=f"ddpm_ms-rank{self.parallel.rank}-"), cfg)
            atexit.register(shutil.rmtree, self.run.path, True)
        self.out = self.run.path
        if resume:
            self._resume(Path(out))
        # All weights are in place: only now compile (a compiled graph keeps the values that
        # set_data replaces afterwards).
        self.train_step: TrainStep = make_train_step(
            self.diffusion, self.optimizer, jit=self.jit, grad_accum=t.grad_accum, clip_grad=t.clip_grad,
            weight_decay=decoupled_decay(t.optimizer, t.weight_decay), loss_scaler=self.scaler,
            parallel=self.parallel)
        self.host = HostLoop(self.train_step, self.rng, self.schedule.timesteps, cfg.model.num_classes,
                             cfg.diffusion.cond_drop_prob, self.ema, parallel=self.parallel, seed=t.seed)
        self._agree = AnyRank() if self.parallel is not None else None
        self._stop_signal, self._stop_at, self._saved_step = None, None, self.step

    # -- set-up -------------------------------------------------------------------------------
    def _check_data_fits(self):
        m = self.cfg.model
        shapes = self.dataset.output_shapes()
        if not shapes or len(shapes[0]) != 4:
            raise ValueError(f"the data set yields {shapes}; training needs batches of images shaped (B, C, H, W)")
        _, c, h, w = shapes[0]
        if m.num_classes and (len(shapes) != 2 or len(shapes[1]) != 1):
            raise ValueError(f"the model is class-conditional (num_classes={m.num_classes}) but the data set yields "
                             f"{len(shapes)} column(s) {shapes}; it needs (image, label) batches: use a labelled "
                             "data set or set model.num_classes to 0")
        if (c, h, w) != (m.channels, *m.image_size):
            raise ValueError(
                f"the data yields {c}-channel {h}x{w} images but the model is configured for {m.channels}-channel "
                f"{m.image_size[0]}x{m.image_size[1]}: pick the preset that matches the data, or set "
                "model.channels / model.image_size to the data's")

    def _build_evaluator(self):
        """(feature extractor, test-set reference) for FID during training, checked before
        anything is written: models of a data set with a classifier (also padded) have one."""
        m, data = self.cfg.model, self.cfg.data
        if data.dataset not in scored_datasets():
            raise MetricsUnavailable(f"--eval-every measures FID with a classifier of {', '.join(scored_datasets())}; this "
                                     f"run trains on {data.dataset} images. Drop --eval-every")
        crop_margin((m.channels, *m.image_size), data.dataset)
        extractor = FeatureExtractor(data.dataset, jit=self.jit)
        return extractor, Reference.load(data.dataset, extractor, data.root)

    def evaluate(self) -> dict:
        """FID and friends of `eval_num` images from the sampling model (same noise every time,
        so successive figures differ by the model only); appended to the run's eval.jsonl."""
        if not self.is_main:  # rank 0 measures; the others go on to the next update
            return None
        t = self.cfg.train
        extractor, reference = self._evaluator
        record, _, _ = sample_and_score(self.pipeline(), extractor, reference, t.eval_sampler,
                                        t.eval_steps, t.eval_num, seed=t.seed, batch_size=min(250, t.eval_num),
                                        progress=False)
        self.model.set_train(True)
        record = {"checkpoint": None, "step": self.step, "weights": "ema" if self.ema is not None else "raw",
                  **record, "during_training": True}
        self.run.append_evaluation(record)
        self.last_eval = record
        return record

    def _init_weights(self, source):
        source = Path(source)
        path = ckpt_io.latest_checkpoint(source) if source.is_dir() else source
        info = ckpt_io.load_into(self.model, path, weights="auto", adapt_labels=True)
        labels = f"; {info['labels']}" if info["labels"] else ""
        self.initialised_from = f"{path} ({info['weights']} weights{labels})"
        self.cfg.train.init_from = str(path)

    def _resume(self, out: Path):
        path, saved = ckpt_io.resumable_checkpoint(out)
        before = ckpt_io.saved_config(saved) or Config.load(out).to_dict()
        ignore = RESUMABLE_CHANGES + ("train.init_from",)
        if self.cfg.train.lr_schedule == "cosine":  # the run's length is the cosine's horizon
            ignore = tuple(k for k in ignore if k not in ("train.steps", "train.epochs"))
        diffs = ckpt_io.config_differences(before, self.cfg.to_dict(), ignore=ignore)
        if diffs:
            raise ckpt_io.CheckpointMismatch(
                f"cannot resume {out} from {path.name}: the settings differ from the checkpoint's: "
                + "; ".join(diffs) + ". Resume without those flags, or start a new run with --init-from "
                f"{path} to fine-tune from it.")
        ckpt_io.load_into(self.model, path, "raw", saved)
        if self.ema is not None:
            ckpt_io.load_into(self.ema_model, path, "ema", saved)
        ckpt_io.load_optimizer_state(self.optimizer, self.model.get_parameters(), saved, path)
        if self.scaler is not None:
            ckpt_io.load_scaler_state(self.scaler, saved)
        state = ckpt_io.state_of(saved)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.elapsed = float(state.get("elapsed_s", 0.0))
        if self.ema is not None:
            self.ema.num_updates = int(state.get("ema_updates", 0))
        if "rng" in state:
            self.rng.bit_generator.state = json.loads(state["rng"])
        self.ckpt, self.resumed_from = path, path
        if self.is_main:
            self.command = self.run.command() or self.command  # the command that started the run
            self.run.resume_at(self.step, self.cfg)

    # -- pictures -----------------------------------------------------------------------------
    @property
    def sampling_model(self):
        """The EMA model when the run keeps one (what DDPM samples from), else the model."""
        return self.ema_model if self.ema_model is not None else self.model

    def pipeline(self, model=None) -> DiffusionPipeline:
        """The sampling model (or `model`) as a pipeline with this run's schedule and sampling settings."""
        pipe = DiffusionPipeline.from_config(self.cfg, model or self.sampling_model)
        pipe.jit = self.jit
        return pipe

    def sample_images(self, trajectory_every=None, model=None):
        """The run's grid images: DDPM in `sample_steps` steps from the run's seed, every class in turn
        (class-conditional), guided as the run's sampling settings say. Returns (images, trajectory)."""
        t = self.cfg.train
        out = self.pipeline(model)(t.num_samples, sampler="ddpm", num_inference_steps=t.sample_steps, seed=t.seed,
                                   return_trajectory=trajectory_every or False, progress=self.progress)
        self.model.set_train(True)
        return out.images, out.trajectory

    @property
    def grid_columns(self):
        """A class-conditional run's grids hold one class per column; others are square."""
        n = self.cfg.model.num_classes
        return n if n and self.cfg.train.num_samples >= n else None

    def save_samples(self, name: str) -> Path | None:
        images, _ = self.sample_images()
        return viz.save_grid(images, self.run.grid(name), nrow=self.grid_columns)

    def _plot_loss(self):
        viz.plot_loss(self.out / "log.csv", self.out / "loss.png", f"{self.cfg.preset}: training loss")

    def _pictures(self, name):
        if not self.is_main:  # rank 0 draws the run's pictures
            return
        self.save_samples(name)
        self._plot_loss()

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "elapsed_s": float(self.elapsed), "rng": json.dumps(self.rng.bit_generator.state)}
        if self.ema is not None:
            state["ema_updates"] = self.ema.num_updates
        return state

    def save(self, name: str | None = None) -> Path:
        """Checkpoint the whole training state (atomically), then drop old step checkpoints."""
        t = self.cfg.train
        if not self.is_main:  # every rank holds the same weights; rank 0 writes them
            self._saved_step = self.step
            return self.ckpt
        name = name or f"step_{self.step:07d}.ckpt"
        self.ckpt = ckpt_io.save_checkpoint(
            self.model, self.out / "checkpoints" / name, self.state(), ema_model=self.ema_model,
            optimizer=self.optimizer, loss_scaler=self.scaler,
            config=self.cfg)
        ckpt_io.rotate_checkpoints(self.out, t.keep_last, t.pin_every)
        self._saved_step = self.step
        return self.ckpt

    # -- the loop -----------------------------------------------------------------------------
    def _batches(self):
        """Yields micro-batches from the current data position, epoch after epoch."""
        while True:
            ds.config.set_seed(epoch_seed(self.cfg.train.seed, self.epoch))
            for i, batch in enumerate(self.dataset.create_tuple_iterator(num_epochs=1)):
                if i >= self.batch_in_epoch:  # on resume: the epoch's batches already used are skipped
                    self.batch_in_epoch = i + 1
                    yield batch  # (image,) or (image, label)
            self._end_of_epoch()
            self.epoch += 1
            self.batch_in_epoch = 0

    def _end_of_epoch(self):
        t = self.cfg.train
        if not t.sample_every and self.step < self.total_steps:
            self._pictures(f"epoch_{self.epoch:03d}")

    def _install_signal_handlers(self):
        """Route SIGINT and SIGTERM to `_on_signal`. Both mean "stop": while its kernels run,
        MindSpore's runtime holds a native SIGINT handler that turns Ctrl-C into SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        if self._stop_signal is not None:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name
        print(f"\n{self._stop_signal} received: saving a checkpoint after the current step (Ctrl-C again stops "
              "without saving)", flush=True)

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to the configured length; returns a summary (also written to summary.json).
        Ctrl-C (SIGINT) or SIGTERM saves a checkpoint after the current step and returns a
        summary with "interrupted" set to the signal's name; so does reaching `stop_at` (a
        step before the end: train in chunks, e.g. in a notebook, and continue with resume)."""
        self._stop_at = stop_at
        self._handlers = {}
        self._install_signal_handlers()
        try:
            compile_s = self._loop()
        except NonFiniteLoss as e:
            kept = f"the last good checkpoint is {self.ckpt}" if self.ckpt else "no checkpoint was written yet"
            raise NonFiniteLoss(f"{e}; {kept}. Lower the learning rate (now {self.cfg.train.lr:g}) or clip "
                                "gradients (--clip-grad), and resume or train again.") from None
        finally:
            for sig, old in self._handlers.items():
                signal.signal(sig, old)
        if self._stop_signal is not None:
            return self._write_summary(compile_s, interrupted=self._stop_signal)
        return self._finish(compile_s)

    def _loop(self):
        """Updates until the run's length, a signal or stop_at, each followed by the events due
        at its step; returns the first update's time (it compiles the graphs)."""
        batches, compile_s = self._batches(), None
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.cfg.preset}",
                   disable=not self.progress, dynamic_ncols=True)
        self.model.set_train(True)
        with self.run.open_log() as log, bar:
            events = self._events(log, bar)
            while self.step < self.total_steps and not self._stopping():
                tic = time.perf_counter()
                update = self.host.run(batches, self.step + 1)
                self.step += 1
                seconds = time.perf_counter() - tic
                self.elapsed += seconds
                if compile_s is None:  # the compiling update is left out of the speed
                    compile_s = seconds
                    log.add(update, 0, 0.0)
                else:
                    log.add(update, update.images, seconds)
                bar.update(1)
                if self._stop_at is not None and self._stop_at <= self.step < self.total_steps:
                    self._stop_signal = f"stop_at {self._stop_at}"
                for event in events:  # each asks afresh: a signal may arrive during the one before
                    if event.due(self.step, self.step == self.total_steps, self._stop_signal is not None):
                        event.fire()
            if self._stop_signal is not None and self._saved_step != self.step:
                self.save()  # the signal came while pictures were being drawn
        return compile_s

    def _events(self, log, bar) -> list[Periodic]:
        """After an update, in this order: an FID evaluation (also at the end, never when stopping),
        a log row (also at the end, when stopping and with an evaluation), a checkpoint (also when
        stopping; the end writes final.ckpt), a grid (neither at the end, which draws the final one,
        nor when stopping; with no sample_every, _end_of_epoch draws one an epoch)."""
        t = self.cfg.train
        self._last_plot = time.time()
        return [Periodic("eval", t.eval_every, self.evaluate, at_end=True, when_stopping=False),
                Periodic("log", t.log_every, lambda: self._log_row(log, bar), at_end=True, when_stopping=True,
                         also=self._evaluated_at),
                Periodic("checkpoint", t.save_every, self.save, when_stopping=True),
                Periodic("grid", t.sample_every, lambda: self._pictures(f"step_{self.step:07d}"), at_end=False,
                         when_stopping=False)]

    def _stopping(self) -> bool:
        """A signal (or stop_at) has asked to stop; in a data-parallel run, on any rank (all ranks stop
        after the same update, or the others would wait for it forever)."""
        local = self._stop_signal is not None
        if self._agree is None:
            return local
        if self._agree(local) and self._stop_signal is None:
            self._stop_signal = "another worker's signal"
        return self._stop_signal is not None

    def _evaluated_at(self, step) -> bool:
        return self.last_eval is not None and self.last_eval["step"] == step

    def _log_row(self, log, bar):
        """A row of log.csv (with the FID of this step's evaluation), the progress bar's figures,
        and the loss plot at most once a minute."""
        fid = self.last_eval["fid"] if self._evaluated_at(self.step) else None
        bar.set_postfix(log.write(self.step, self.epoch, self.elapsed, fid))
        if time.time() - self._last_plot > 60:
            self._plot_loss()
            self._last_plot = time.time()

    def _finish(self, compile_s):
        """Final checkpoint, loss curve, the final grid and its denoising GIF, summary.json."""
        t = self.cfg.train
        self.save("final.ckpt")
        if not self.is_main:
            return self._write_summary(compile_s)
        self._plot_loss()
        images, trajectory = self.sample_images(trajectory_every=max(1, t.sample_steps // 50))
        viz.save_grid(images, self.run.grid("final"), nrow=self.grid_columns)
        # This is also the run's last periodic grid: same model, same seed.
        periodic = f"step_{self.step:07d}" if t.sample_every else f"epoch_{self.epoch:03d}"
        viz.save_grid(images, self.run.grid(periodic), nrow=self.grid_columns)
        viz.save_denoising_gif(trajectory, self.out / "denoising.gif", nrow=self.grid_columns, max_images=t.num_samples)
        return self._write_summary(compile_s)

    def _write_summary(self, compile_s, interrupted=None):
        t = self.cfg.train
        log = viz.read_log(self.run.log)
        speeds = log["img_per_s"][log["img_per_s"] > 0] if log else []
        summary = {"preset": self.cfg.preset, "command": self.command, "machine": machine(),
                   "workers": self.parallel.world if self.parallel is not None else 1,
                   "device": self.device, "mode": t.mode, "amp": self.amp_level,
                   "steps": self.step, "epochs": self.epoch, "parameters": count_parameters(self.model),
                   "batch_size": t.batch_size, "grad_accum": t.grad_accum,
                   "final_loss": float(log["loss"][-1]) if log else None,
                   "img_per_s": float(np.median(speeds)) if len(speeds) else None,
                   "compile_s": compile_s, "train_wall_s": self.elapsed,
                   "checkpoint": str(self.ckpt), "weights": "ema" if self.ema is not None else "raw",
                   "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                   "initialised_from": self.initialised_from, "interrupted": interrupted}
        if self.last_eval is not None:
            summary["eval"] = {k: self.last_eval[k] for k in ("step", "fid", "inception_score", "precision", "recall",
                                                              "sampler", "steps", "num")}
        if not interrupted:
            summary.update(grid=str(self.run.grid("final")), gif=str(self.out / "denoising.gif"))
        return self.run.write_summary(summary)
