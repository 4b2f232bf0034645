"""Argument types shared by the scripts: a bad number is one clear argparse error."""
from __future__ import annotations

import argparse


def _number(convert, what: str, ok, requirement: str):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value
    return parse


positive_int = _number(int, "an integer", lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, "an integer", lambda v: v >= 0, "zero or positive")
non_negative_float = _number(float, "a number", lambda v: v >= 0, "zero or positive")
positive_float = _number(float, "a number", lambda v: v > 0, "positive")
unit_float = _number(float, "a number", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def guidance_interval(text):
    """--guidance-interval LO,HI (guide at timesteps LO <= t <= HI only) or all (every step, returned
    as an empty tuple, so that "not given" stays None)."""
    if text.strip().lower() == "all":
        return ()
    lo, sep, hi = text.partition(",")
    try:
        lo, hi = int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI (two timesteps, e.g. 0,700) or all") from None
    if not (sep and 0 <= lo <= hi):
        raise argparse.ArgumentTypeError(f"must be LO,HI with 0 <= LO <= HI (e.g. 0,700) or all, got {text!r}")
    return lo, hi


GUIDANCE_INTERVAL_HELP = ("guide only the sampling steps at timesteps LO <= t <= HI, the conditional model alone "
                          "elsewhere (Kynkaenniemi et al. 2024; e.g. 0,700 leaves the noisiest steps unguided); "
                          "all: every step")


LAMBDA_MIN_CLIPPED_HELP = ("dpm++ and dpm++sde: visit only timesteps whose log-SNR is at least this (diffusers' "
                           "lambda_min_clipped; default -4.3 for dpm++, where its trailing grid starts at t = 990 "
                           "of the cosine schedule, none for dpm++sde); none: start at T-1")


def log_snr_limit(text):
    """--lambda-min-clipped: a log-SNR (negative numbers are fine: -4.3) or none (-inf: no limit)."""
    if text.strip().lower() in ("none", "-inf"):
        return float("-inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log-SNR (a number such as -4.3) or none") from None
    if value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite log-SNR or none, got {text!r}")
    return value


SOLVER_ORDER_HELP = ("DPM-Solver++'s order: 2 (2M, the default), 1 (first order) or 3 (3M, --sampler dpm++ only; "
                     "see docs/sampling.md)")


def dpm_solver_flag_problem(sampler: str, solver_order: int | None = None,
                            lambda_min_clipped: float | None = None) -> str | None:
    """Why --solver-order / --lambda-min-clipped do not go with --sampler SAMPLER (both belong to
    DPM-Solver++), or None when they do."""
    given = [flag for flag, value in (("--solver-order", solver_order), ("--lambda-min-clipped", lambda_min_clipped))
             if value is not None]
    if given and not sampler.startswith("dpm++"):
        return f"{given[0]} applies to --sampler dpm++ and dpm++sde, not {sampler}"
    if solver_order == 3 and sampler != "dpm++":
        return f"--solver-order 3 solves the ODE only: use --sampler dpm++, or order 1 or 2 with {sampler}"
    return None


def timestep_list(text):
    """--timesteps T1,T2,...: a custom sampling grid (the scheduler checks that it descends and fits T)."""
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of timesteps (e.g. 990,700,400,100)")
    if not steps:
        raise argparse.ArgumentTypeError("give at least one timestep")
    return steps
