"""Argument types shared by the scripts: a bad number is one clear argparse error."""
from __future__ import annotations

import argparse

from ddpm_ms.config import MODES
from ddpm_ms.device import TARGETS
from ddpm_ms.registry import BACKBONES, SAMPLERS

DEVICES = ("auto", *TARGETS)


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


def add_guidance_flags(p, default: str) -> None:
    """--guidance-scale, --guidance-rescale and --guidance-interval: classifier-free guidance of a
    class-conditional model, on a parser or an argument group. `default` says what leaving one out
    means, {field} standing for the sampling config field it is ("default: the model's
    sampling.{field}"; train.py's flags set the run's own)."""
    p.add_argument("--guidance-scale", type=non_negative_float, metavar="W",
                   help=f"classifier-free guidance weight of a class-conditional model "
                        f"({default.format(field='guidance_scale')}; 1: no guidance, 0: unconditional)")
    p.add_argument("--guidance-rescale", type=unit_float, metavar="PHI",
                   help="with guidance: rescale its output toward the conditional one's spread, against "
                        f"over-exposure (Lin et al. 2024; {default.format(field='guidance_rescale')}; 0: off)")
    p.add_argument("--guidance-interval", type=guidance_interval, metavar="LO,HI|all",
                   help=f"{GUIDANCE_INTERVAL_HELP} ({default.format(field='guidance_interval')})")


def device_name(text):
    """--device in any case (cpu: CPU), as select_device reads it; argparse's choices refuse the rest."""
    return {d.lower(): d for d in DEVICES}.get(text.lower(), text)


def add_device_flags(p, compiles: str | None = None, from_config: bool = False) -> None:
    """--device, and --mode for a command that compiles something (`compiles` says what). from_config:
    no defaults here, the run's config (train.device, train.mode) fills them in."""
    p.add_argument("--device", type=device_name, choices=DEVICES, default=None if from_config else "auto",
                   help="auto picks Ascend, then GPU, then CPU (default: "
                        + ("the config's train.device, auto in every preset)" if from_config else "auto)"))
    if compiles:
        p.add_argument("--mode", choices=MODES, default=None if from_config else "graph",
                       help=f"graph compiles {compiles}; pynative runs op by op, for debugging (default: "
                            + ("the config's train.mode, graph in every preset)" if from_config else "graph)"))


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


def sampler_flag_problem(sampler: str, **options) -> str | None:
    """Why a sampler setting given as a flag (eta=..., solver_order=..., lambda_min_clipped=...; None: not
    given) does not go with --sampler SAMPLER (each belongs to the samplers whose registry entry lists it
    among its options), or None when they all do."""
    for option, value in options.items():
        if value is not None and option not in SAMPLERS[sampler].options:
            takers = [n for n in SAMPLERS if option in SAMPLERS[n].options]
            return f"--{option.replace('_', '-')} applies to --sampler {' and '.join(takers)}, not {sampler}"
    if options.get("solver_order") == 3 and sampler != "dpm++":
        return f"--solver-order 3 solves the ODE only: use --sampler dpm++, or order 1 or 2 with {sampler}"
    return None


def sampler_help(what: str) -> str:
    """--sampler's help: every registered sampler by name and title, then `what` says the default."""
    return ", ".join(f"{n} ({SAMPLERS[n].title})" for n in SAMPLERS) + f"; {what}"


def timestep_list(text):
    """--timesteps T1,T2,...: a custom sampling grid (the scheduler checks that it descends and fits T)."""
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of timesteps (e.g. 990,700,400,100)")
    if not steps:
        raise argparse.ArgumentTypeError("give at least one timestep")
    return steps


def model_flags() -> dict:
    """{"--flag": (field, help, the backbones it sizes)} over every registered backbone's config `flags`."""
    flags = {}
    for name in BACKBONES:
        for flag, (field, help_text) in BACKBONES[name].config.flags.items():
            flags.setdefault(flag, (field, help_text, []))[2].append(name)
    return flags


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags that size a backbone, one group per backbone (a flag two backbones share is listed once)."""
    seen = set()
    for name in BACKBONES:
        entry = BACKBONES[name]
        new = {f: v for f, v in entry.config.flags.items() if f not in seen}
        if new:
            group = p.add_argument_group(f"{entry.title or name} size (--preset or --config picks the backbone)")
            for flag, (_, help_text) in new.items():
                group.add_argument(flag, type=positive_int, help=help_text)
            seen.update(new)


def set_model_fields(model, args) -> None:
    """Set the model fields that add_model_flags' flags give; a flag that does not size this backbone
    is an error naming the backbones it sizes and this one's own flags."""
    for flag, (field, _, owners) in model_flags().items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if flag not in type(model).flags:
            titles = " or a ".join(BACKBONES[n].title or n for n in owners)
            own = ", ".join(type(model).flags) or "none"
            raise ValueError(f"{flag} sizes a {titles}; a {BACKBONES[model.arch].title or model.arch} takes {own}")
        setattr(model, field, value)
