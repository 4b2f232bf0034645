"""What every scheduler shares: the timestep grid, the model-output conversions and `add_noise`.

The API is diffusers': `set_timesteps(n)`, then for each `t` in `timesteps`,
`step(model_output, t, sample, noise) -> SchedulerOutput(prev_sample, pred_original_sample)`.
Per-step coefficients are computed in float64 on the host and enter the tensor maths as Python
floats; the image tensors stay on the device. Timestep -1 stands for the clean image
(alpha-bar = 1), which is where the last step of every scheduler lands.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import ops

from ddpm_ms.diffusion.gaussian import forward_noise
from ddpm_ms.diffusion.schedule import NoiseSchedule

PREDICTION_TYPES = ("eps", "x0", "v")
# diffusers' names for the same targets, accepted wherever a prediction type is given.
DIFFUSERS_PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def x0_estimate(model_output, sample, a, s, prediction_type: str):
    """The clean image a model output implies at x_t = a x0 + s eps (unclamped); a and s are floats or
    tensors, so the same formula serves the schedulers and loss guidance's compiled gradient."""
    if prediction_type == "eps":
        return (sample - s * model_output) / a
    if prediction_type == "v":  # v = a eps - s x0  =>  x0 = a x_t - s v
        return a * sample - s * model_output
    return model_output


@dataclass
class SchedulerOutput:
    prev_sample: ms.Tensor
    pred_original_sample: ms.Tensor


def spaced_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str) -> np.ndarray:
    """`num_inference_steps` distinct training timesteps, descending (Lin et al. 2023, table 2).

    leading (the default of DDPM, DDIM and the SDE solver, as of diffusers' DDIM and improved DDPM's
        respacing): (n-1)T/n, ..., T/n, 0. With fewer steps than T it never visits t = T-1, where
        alpha-bar is near 0 (2.4e-9 for the cosine schedule) and an eps-predicting model's x0
        estimate is its prediction error times 1/sqrt(alpha-bar) (see docs/sampling.md);
    trailing (the default of DPM-Solver++'s ODE): T-1, T-1-T/n, ..., T/n-1: starts from pure
        noise (Lin et al. 2023). With x0 clipped, the first step's amplified error stays bounded,
        and on trained models this grid scores the better FID (docs/sampling.md);
    linspace: n points from T-1 down to 0, rounded.
    """
    T, n = num_train_timesteps, num_inference_steps
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; use one of {TIMESTEP_SPACINGS}")
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be in 1..{T} (the training timesteps), got {n}")
    if spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    elif spacing == "leading":
        steps = np.floor(np.arange(n) * (T / n)).astype(np.int64)
    else:
        steps = np.round(np.linspace(0, T - 1, n)).astype(np.int64)
    steps = np.unique(np.clip(steps, 0, T - 1))[::-1].copy()
    if len(steps) != n:  # rounding can merge neighbours only when n is close to T
        raise ValueError(f"{spacing} spacing gives {len(steps)} distinct timesteps for n={n}; use trailing")
    return steps


class Scheduler:
    """Base of the samplers. prediction_type: what the model outputs ("eps", "x0" or "v");
    clip_sample clamps the predicted x_0 to [-clip_range, clip_range] (data lives in [-1, 1])."""

    default_spacing = "leading"
    multistep = False  # True: `step` builds on the previous steps' outputs (see reset), so the chain cannot go back

    def __init__(self, schedule: NoiseSchedule, prediction_type="eps", clip_sample=True, clip_range=1.0,
                 timestep_spacing=None):
        prediction_type = DIFFUSERS_PREDICTION_TYPES.get(prediction_type, prediction_type)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES} or "
                             f"diffusers' {tuple(DIFFUSERS_PREDICTION_TYPES)}")
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_sample, self.clip_range = bool(clip_sample), float(clip_range)
        self.timestep_spacing = timestep_spacing or self.default_spacing
        self.num_train_timesteps = schedule.timesteps
        self.set_timesteps(self.default_inference_steps())

    def default_inference_steps(self) -> int:
        return self.num_train_timesteps

    # -- the timestep grid -----------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, timesteps=None) -> None:
        """Run the chain on `num_inference_steps` timesteps (see `spaced_timesteps`), or on the
        given `timesteps` (a custom grid, as diffusers takes it: distinct training timesteps in
        descending order, used as they are), and forget any state of an earlier chain."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("set_timesteps takes num_inference_steps or timesteps, not both and not neither")
        if timesteps is not None:
            self.timesteps = self.custom_grid(timesteps)
        else:
            n, span = int(num_inference_steps), self.grid_span()
            self.timesteps = spaced_timesteps(self.num_train_timesteps, n, self.timestep_spacing)
            if self.timesteps[0] >= span:  # the grid would start too noisy: lay it over t < span instead,
                try:                       # unless n distinct steps do not fit there (n close to T)
                    self.timesteps = spaced_timesteps(span, n, self.timestep_spacing)
                except ValueError:
                    pass
        self.num_inference_steps = len(self.timesteps)
        self._index = {int(t): i for i, t in enumerate(self.timesteps)}
        self.reset()

    def custom_grid(self, timesteps) -> np.ndarray:
        """`timesteps` checked: integers in 0..T-1, strictly descending (the chain runs from noisy to clean)."""
        T = self.num_train_timesteps
        grid = np.asarray(timesteps)
        if grid.ndim != 1 or grid.size == 0 or not (np.issubdtype(grid.dtype, np.integer)
                                                    or np.all(np.mod(grid, 1) == 0)):
            raise ValueError(f"timesteps must be a non-empty list of integers, got {timesteps!r}")
        grid = grid.astype(np.int64)
        if grid.min() < 0 or grid.max() > T - 1:
            raise ValueError(f"timesteps must lie in 0..{T - 1} (the training timesteps), got {grid.min()}..{grid.max()}")
        if np.any(np.diff(grid) >= 0):
            raise ValueError(f"timesteps must descend strictly (noisiest first), got {grid.tolist()}")
        return grid

    def grid_span(self) -> int:
        """How many training timesteps, from t = 0 up, the grid may visit (all T here; DPM-Solver++
        leaves out the noisiest few, see `lambda_min_clipped`). A grid that would start above them is
        laid over these instead (the trailing grid then starts at span - 1), if its n steps fit there."""
        return self.num_train_timesteps

    def reset(self) -> None:
        """Clear per-chain state (multistep solvers keep earlier model outputs)."""

    def step_index(self, t: int) -> int:
        try:
            return self._index[int(t)]
        except KeyError:
            raise ValueError(f"timestep {t} is not in this scheduler's timesteps; call set_timesteps first "
                             f"and step through `timesteps` ({self.timesteps[:3].tolist()}...)") from None

    def previous_timestep(self, t: int) -> int:
        """The timestep the step from `t` lands on; -1 is the clean image."""
        i = self.step_index(t)
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at timestep t in float64; 1 at t = -1 (the clean image)."""
        return 1.0 if t < 0 else float(self.schedule.alphas_cumprod[t])

    def needs_noise(self, t: int) -> bool:
        """Whether `step` from `t` adds fresh noise (then it must be given `noise`)."""
        return False

    # -- model output conversions ----------------------------------------------------------------
    def predict_x0(self, model_output, t: int, sample):
        """The model's estimate of the clean image, clipped when clip_sample is set."""
        ab = self.alpha_bar(t)
        x0 = x0_estimate(model_output, sample, float(np.sqrt(ab)), float(np.sqrt(1.0 - ab)), self.prediction_type)
        if self.clip_sample:
            x0 = ops.clamp(x0, -self.clip_range, self.clip_range)
        return x0

    def eps_from_x0(self, x0, t: int, sample):
        """The noise consistent with x_t and a (possibly clipped) x_0 estimate."""
        ab = self.alpha_bar(t)
        return (sample - float(np.sqrt(ab)) * x0) / float(np.sqrt(1.0 - ab))

    # -- forward process -------------------------------------------------------------------------
    def add_noise(self, original, noise, timesteps):
        """Forward process q(x_t | x_0) for integer `timesteps` (array-like, one per image)."""
        t = ms.Tensor(np.asarray(timesteps, dtype=np.int32).reshape(-1))
        return forward_noise(self.schedule.tensor("sqrt_alphas_cumprod"),
                             self.schedule.tensor("sqrt_one_minus_alphas_cumprod"), original, t, noise)

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(T={self.num_train_timesteps}, steps={self.num_inference_steps}, "
                f"prediction_type={self.prediction_type!r}, spacing={self.timestep_spacing!r})")
