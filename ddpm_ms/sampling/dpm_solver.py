"""DPM-Solver++ multistep (Lu et al. 2022), shaped like diffusers' DPMSolverMultistepScheduler.

The solver integrates the probability-flow ODE in log-SNR time lambda = log(alpha / sigma)
using the model's x0 estimate ("data prediction"). Order 1 is DDIM with eta = 0; order 2 ("2M")
reuses the previous step's x0 estimate for a second-order correction at no extra model call
(the midpoint form of the paper's algorithm 2); order 3 ("3M", the ODE only) reuses the two
previous ones (the paper's multistep third-order update, as diffusers' solver_order=3). The last
step lands on the clean image (sigma = 0, diffusers' final_sigmas_type="zero"), where only the
first-order update is defined.

algorithm_type="sde-dpmsolver++" solves the reverse SDE instead (the paper's SDE-DPM-Solver++,
diffusers' algorithm of that name, "DPM++ 2M SDE" in image tools): the same multistep x0
estimates, plus fresh noise every step, which corrects part of an imperfect model's error
where the ODE carries it to the end. At first order it is DDIM with eta = 1.
"""
from __future__ import annotations

import numpy as np

from ddpm_ms.diffusion.schedule import NoiseSchedule
from ddpm_ms.registry import SAMPLERS, Sampler
from ddpm_ms.sampling.base import Scheduler, SchedulerOutput


# Where the ODE's grid starts (diffusers' lambda_min_clipped): at t = T-1 of the cosine schedule,
# alpha-bar is 2.4e-9, and an eps-predicting model's x0 estimate, its error divided by sqrt(alpha-bar),
# is clipped to +-1 on 99.7% of the pixels: a binary pattern that the first step writes into every
# image at the strength of real signal. From log-SNR -4.3 (t = 990 of the cosine schedule's 1,000,
# alpha-bar 2e-4) the estimate is a blurred garment instead (37% clipped), and the starting noise
# still lacks only 1.4% of the data. Why: docs/sampling.md ("Where the ODE starts"); what it is worth
# on trained models: docs/experiments/samplers.md.
DEFAULT_LAMBDA_MIN_CLIPPED = -4.3


class DPMSolverMultistepScheduler(Scheduler):
    """solver_order: 1, 2 or 3 (3: the ODE only; the steps with fewer earlier outputs take the
    order they allow). lower_order_final: take the second-to-last step at first order too
    when it lands on t = 0 (the leading grid ends there, and the jump in log-SNR from about T/n
    to 0 is many times the previous step's, where the second-order correction overshoots) or when
    there are fewer than 15 steps (as in diffusers). algorithm_type: "dpmsolver++" (the ODE,
    deterministic) or "sde-dpmsolver++" (the SDE, stochastic). lambda_min_clipped: the grid only
    visits timesteps whose log-SNR is at least this (diffusers' option of that name); None: -4.3 for the
    ODE (its trailing grid then starts at t = 990 of the cosine schedule, not 999; see above), no limit
    for the SDE (its leading grid starts at 950 anyway); -inf: no limit.

    The default grid is "trailing" for the ODE (it starts from t = T-1, like diffusers' default
    "linspace" for this scheduler) and "leading" for the SDE: on trained eps-predicting models the
    ODE scores the better FID on the trailing grid and the SDE on the leading one
    (docs/experiments/samplers.md)."""

    ALGORITHM_TYPES = ("dpmsolver++", "sde-dpmsolver++")
    multistep = True

    @property
    def default_spacing(self) -> str:
        return "trailing" if self.algorithm_type == "dpmsolver++" else "leading"

    def __init__(self, schedule: NoiseSchedule, solver_order=2, prediction_type="eps", clip_sample=True,
                 clip_range=1.0, timestep_spacing=None, lower_order_final=True, algorithm_type="dpmsolver++",
                 lambda_min_clipped=None):
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        if algorithm_type not in self.ALGORITHM_TYPES:
            raise ValueError(f"algorithm_type must be one of {self.ALGORITHM_TYPES}, got {algorithm_type!r}")
        if solver_order == 3 and algorithm_type != "dpmsolver++":
            raise ValueError("solver_order 3 is defined for the ODE (algorithm_type='dpmsolver++'); "
                             "the SDE solver takes order 1 or 2")
        self.solver_order, self.lower_order_final = int(solver_order), bool(lower_order_final)
        self.algorithm_type = algorithm_type
        if lambda_min_clipped is None:
            lambda_min_clipped = DEFAULT_LAMBDA_MIN_CLIPPED if algorithm_type == "dpmsolver++" else -np.inf
        self.lambda_min_clipped = float(lambda_min_clipped)
        if np.isnan(self.lambda_min_clipped):
            raise ValueError("lambda_min_clipped must be a number or -inf, got nan")
        super().__init__(schedule, prediction_type, clip_sample, clip_range, timestep_spacing)

    def default_inference_steps(self) -> int:
        return min(20, self.num_train_timesteps)

    def grid_span(self) -> int:
        """1 + the noisiest timestep whose log-SNR is at least `lambda_min_clipped`."""
        log_snr = 0.5 * np.log(self.schedule.snr)  # falls with t
        span = int(np.count_nonzero(log_snr >= self.lambda_min_clipped))
        if span == 0:
            raise ValueError(f"lambda_min_clipped = {self.lambda_min_clipped:g} leaves no timestep: this schedule's "
                             f"log-SNR runs from {log_snr[-1]:.2f} (t = T-1) to {log_snr[0]:.2f} (t = 0)")
        return span

    def reset(self) -> None:
        self._history = []  # (timestep, x0 estimate) of the previous steps, newest last

    def _alpha_sigma_lambda(self, t: int):
        ab = self.alpha_bar(t)
        alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
        return alpha, sigma, (np.log(alpha) - np.log(sigma)) if sigma > 0 else np.inf

    def order_at(self, t: int) -> int:
        """The order the step from t uses: 1 on the first step (no history) and the last (to sigma 0),
        at most 2 on the second (one earlier output)."""
        i, n = self.step_index(t), self.num_inference_steps
        if i == 0 or i == n - 1:
            return 1
        if self.lower_order_final and i == n - 2 and (n < 15 or self.timesteps[-1] == 0):
            return 1
        return min(self.solver_order, i + 1)

    @property
    def stochastic(self) -> bool:
        return self.algorithm_type == "sde-dpmsolver++"

    def needs_noise(self, t: int) -> bool:
        return self.stochastic and self.previous_timestep(t) >= 0

    def step(self, model_output, timestep: int, sample, noise=None) -> SchedulerOutput:
        """One multistep update; `noise` (standard normal, the shape of `sample`) is used by the SDE
        solver and ignored by the ODE solver."""
        t, prev = int(timestep), self.previous_timestep(timestep)
        x0 = self.predict_x0(model_output, t, sample)
        order = self.order_at(t)
        i = self.step_index(t)
        needed = [int(self.timesteps[i - k]) for k in range(order - 1, 0, -1)]  # oldest first
        kept = [done for done, _ in self._history]
        if needed and kept[-len(needed):] != needed:
            raise ValueError(f"order-{order} step from t={t} needs the previous steps' outputs: step through "
                             "`timesteps` in order after set_timesteps")
        alpha_s, sigma_s, lambda_s = self._alpha_sigma_lambda(t)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(prev)
        if prev < 0:  # sigma_t = 0: exp(-h) = 0 and the update is the x0 estimate itself
            out = x0
        else:
            h = lambda_t - lambda_s
            # ODE: x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) x0
            # SDE: x_t = (sigma_t / sigma_s) e^-h x_s - alpha_t (e^-2h - 1) x0 + sigma_t sqrt(1 - e^-2h) z
            decay = float(np.exp(-h)) if self.stochastic else 1.0
            phi = float(alpha_t * np.expm1(-2.0 * h if self.stochastic else -h))
            out = float(sigma_t / sigma_s) * decay * sample - phi * x0
            if order == 2:
                t_last, x0_last = self._history[-1]
                r = (lambda_s - self._alpha_sigma_lambda(t_last)[2]) / h
                out = out - float(0.5 * phi / r) * (x0 - x0_last)
            elif order == 3:  # Lu et al. 2022, multistep third order: first and second divided differences
                (t_2, x0_2), (t_1, x0_1) = self._history[-2:]
                lambda_1, lambda_2 = self._alpha_sigma_lambda(t_1)[2], self._alpha_sigma_lambda(t_2)[2]
                r0, r1 = (lambda_s - lambda_1) / h, (lambda_1 - lambda_2) / h
                d1_0, d1_1 = (x0 - x0_1) / float(r0), (x0_1 - x0_2) / float(r1)
                d1 = d1_0 + float(r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = float(1.0 / (r0 + r1)) * (d1_0 - d1_1)
                out = (out + float(alpha_t * (np.expm1(-h) / h + 1.0)) * d1
                       - float(alpha_t * ((np.expm1(-h) + h) / h ** 2 - 0.5)) * d2)
            if self.stochastic:
                if noise is None:
                    raise ValueError(f"the SDE solver's step from t={t} adds noise: pass `noise`")
                out = out + float(sigma_t * np.sqrt(-np.expm1(-2.0 * h))) * noise
        self._history = [*self._history[-1:], (t, x0)]
        return SchedulerOutput(prev_sample=out, pred_original_sample=x0)


# "dpm++" is DPM-Solver++ 2M on the ODE, "dpm++sde" the same multistep solver on the SDE (diffusers'
# algorithm_type="sde-dpmsolver++"; "DPM++ 2M SDE" in image tools).
SAMPLERS.register(Sampler("dpm++", DPMSolverMultistepScheduler, "DPM-Solver++ 2M",
                          options=("solver_order", "lambda_min_clipped")))
SAMPLERS.register(Sampler("dpm++sde", DPMSolverMultistepScheduler, "DPM-Solver++ 2M SDE",
                          fixed={"algorithm_type": "sde-dpmsolver++"}, options=("solver_order", "lambda_min_clipped")))
