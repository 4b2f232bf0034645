"""python scripts/demo.py [--model DIR_OR_NAME | --run DIR] [--port P]: a web page to play with a model.

A Gradio app (ddpm_ms.web_demo) over a pipeline (the shipped one by default) or a training run:
pick a class (or none), the sampler and its steps, classifier-free guidance, a colour and a text
prompt to steer toward, the seed and the number of images, optionally a starting image
(image-to-image) and a region to repaint (inpainting); it shows the grid and the denoising GIF and
offers both for download.

Fully offline: served on 127.0.0.1 by default, no share link, no analytics, system fonts only.
Gradio is an optional extra: `pip install -e .[demo]`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ddpm_ms.cli.args import add_device_flags, non_negative_int
from ddpm_ms.cli.command import command
from ddpm_ms.cli.steering import add_text_model_flag
from ddpm_ms.device import select_device
from ddpm_ms.pipeline import DEFAULT_PRETRAINED, DiffusionPipeline
from ddpm_ms.web_demo import Demo, GradioMissing, launch, require_gradio


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="DIR_OR_NAME",
                     help=f"a pipeline directory or shipped pipeline name (default: {DEFAULT_PRETRAINED!r})")
    src.add_argument("--run", type=Path, help="a training run directory (its newest checkpoint)")
    add_text_model_flag(p, "the page's text prompts")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=non_negative_int, default=7860, help="port (default 7860; 0: any free port)")
    add_device_flags(p)
    return p


def run(args) -> int:
    require_gradio()
    if args.run is not None and not args.run.is_dir():
        raise FileNotFoundError(f"run directory {args.run} does not exist")
    device = select_device(args.device)
    pipe = DiffusionPipeline.from_pretrained(args.model or args.run or DEFAULT_PRETRAINED)
    demo = Demo(pipe, args.text_model)
    if args.text_model is not None:
        demo.text_model()  # a wrong path fails now, not at the first prompt
    print(f"model: {pipe.source} ({pipe.dataset})  device: {device}")
    _, url = launch(demo, args.host, args.port, block=False)
    print(f"demo running at {url} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


# OSError: a taken port (web_demo.PortTaken) or an unreadable model file, as before
main = command("demo.py", parser, run, errors=(OSError, GradioMissing))

if __name__ == "__main__":
    sys.exit(main())
