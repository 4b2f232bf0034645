"""The steering flags sample.py and evaluate.py share: loss guidance by colour and by text, and
(sample.py) image-to-image and inpainting. They become the pipeline call's guidance terms and the
pipeline's img2img / inpaint task."""
from __future__ import annotations

import argparse
from pathlib import Path

from ddpm_ms.cli.args import guidance_interval, non_negative_float, positive_int, unit_float
from ddpm_ms.sampling.loss_guidance import ColorGuidance, parse_color
from ddpm_ms.textimage import TextGuidance, load_text_image_model

DEFAULT_COLOR_SCALE = 20.0
DEFAULT_PROMPT_SCALE = 20.0


def color_value(text):
    try:
        return parse_color(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_text_model_flag(p, scores: str = "--prompt") -> None:
    """--text-model: the text-image model that scores `scores` (demo.py's page takes it too)."""
    p.add_argument("--text-model", type=Path, metavar="DIR",
                   help=f"a text-image model directory for {scores} (default: the shipped one)")


def add_steering_flags(p: argparse.ArgumentParser, editing: bool = True) -> None:
    g = p.add_argument_group("loss guidance (docs/guidance.md)")
    g.add_argument("--color", type=color_value, metavar="R,G,B",
                   help="push the images toward this colour: R,G,B (0-255) or #rrggbb; a brightness target on "
                        "grey models")
    g.add_argument("--color-scale", type=non_negative_float, metavar="S",
                   help=f"strength of --color (default {DEFAULT_COLOR_SCALE:g}; 0: off)")
    g.add_argument("--prompt", metavar="TEXT",
                   help='push the images toward a text, e.g. "a sneaker", scored by the text-image model '
                        "shipped with ddpm_ms (see --text-model)")
    g.add_argument("--prompt-scale", type=non_negative_float, metavar="S",
                   help=f"strength of --prompt (default {DEFAULT_PROMPT_SCALE:g}; 0: off)")
    add_text_model_flag(g)
    g.add_argument("--loss-guidance-interval", type=guidance_interval, metavar="LO,HI|all",
                   help="apply --color and --prompt only at timesteps LO <= t <= HI (default: all)")
    g.add_argument("--guidance-through-model", action="store_true",
                   help="differentiate --color through the denoiser too (--prompt always is): about 3x slower "
                        "per step, stays closer to the data")
    if editing:
        e = p.add_argument_group("image-to-image and inpainting")
        e.add_argument("--init-image", type=Path, metavar="PATH",
                       help="start from this image (resized to the model's size) instead of pure noise")
        e.add_argument("--strength", type=unit_float, metavar="S",
                       help="how far --init-image is noised: 0 keeps it, 1 ignores it (default 0.8; 1 with --mask)")
        e.add_argument("--mask", type=Path, metavar="PATH",
                       help="inpaint: repaint where this image is white, keep --init-image where it is black")
        e.add_argument("--jump-length", type=positive_int, default=1, metavar="J",
                       help="RePaint resampling with --mask: go back J steps (default 1)")
        e.add_argument("--jump-n-sample", type=positive_int, default=1, metavar="R",
                       help="RePaint resampling with --mask: pass each stretch R times (default 1: no resampling; "
                            "costs about R times the model calls; ddpm and ddim samplers)")


def loss_guidance_terms(args, pipe) -> list:
    """The LossGuidance terms the flags ask for (none when no --color / --prompt)."""
    interval = args.loss_guidance_interval or None  # () means all
    terms = []
    if args.color_scale is not None and args.color is None:
        raise ValueError("--color-scale needs --color R,G,B")
    if args.prompt_scale is not None and args.prompt is None:
        raise ValueError("--prompt-scale needs --prompt TEXT")
    if args.text_model is not None and args.prompt is None:
        raise ValueError("--text-model scores --prompt: pass --prompt TEXT too")
    if args.color is not None:
        scale = DEFAULT_COLOR_SCALE if args.color_scale is None else args.color_scale
        terms.append(ColorGuidance(args.color, scale, interval=interval, through_model=args.guidance_through_model))
    if args.prompt is not None:
        scale = DEFAULT_PROMPT_SCALE if args.prompt_scale is None else args.prompt_scale
        terms.append(TextGuidance(args.prompt, load_text_image_model(args.text_model), scale, interval=interval))
    if not terms and (args.guidance_through_model or args.loss_guidance_interval is not None):
        raise ValueError("--guidance-through-model and --loss-guidance-interval shape --color / --prompt guidance: "
                         "pass one of them")
    return terms


def editing_task(args, pipe):
    """`pipe`, or its image-to-image or inpainting task for --init-image (and --mask)."""
    if getattr(args, "init_image", None) is not None:
        strength = {} if args.strength is None else {"strength": args.strength}
        if args.mask is None:
            return pipe.img2img(args.init_image, **strength)
        return pipe.inpaint(args.init_image, args.mask, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
                            **strength)
    if getattr(args, "mask", None) is not None or getattr(args, "strength", None) is not None:
        raise ValueError("--mask and --strength apply to --init-image: pass the image too")
    if getattr(args, "jump_n_sample", 1) != 1 or getattr(args, "jump_length", 1) != 1:
        raise ValueError("--jump-length and --jump-n-sample are RePaint's resampling: pass --init-image and --mask")
    return pipe


def describe(args, terms) -> str:
    """How the images were steered, for the summary line ("" when not)."""
    parts = [f"{term.name} x {term.scale:g}" for term in terms]
    if parts and args.guidance_through_model:  # the flag shapes --color, the first term (--prompt always is)
        parts[0] += " (through the model)"
    if getattr(args, "init_image", None) is not None:
        parts.append(("inpainting " if args.mask is not None else "from ") + f"{Path(args.init_image).name}"
                     + (f" at strength {args.strength:g}" if args.strength is not None else ""))
    return ", " + ", ".join(parts) if parts else ""
