"""`ddpm-ms COMMAND [flags]`: the installed command, one subcommand per script in scripts/.

    ddpm-ms --help              the commands, one line each
    ddpm-ms sample --help       one command's flags (the same as `python scripts/sample.py --help`)

Each subcommand hands the rest of the command line to its module's `main(argv)`; the module is
imported only then, so `ddpm-ms --help` does not load MindSpore.
"""
from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

from ddpm_ms import __version__


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS = {
    "train": Command("ddpm_ms.cli.train", "train a diffusion model from a preset (or resume / fine-tune a run)"),
    "sample": Command("ddpm_ms.cli.sample", "draw images from the shipped pipeline, a pipeline directory or a run"),
    "evaluate": Command("ddpm_ms.cli.evaluate", "FID, Inception Score, precision and recall of a model or an .npz"),
    "export": Command("ddpm_ms.cli.export", "write a pipeline directory (EMA weights, configs, model card; MindIR) from a run"),
    "bench": Command("ddpm_ms.cli.bench", "measure training and sampling speed and memory"),
    "figures": Command("ddpm_ms.cli.figures", "draw the forward process or the noise schedules"),
    "train-classifier": Command("ddpm_ms.cli.train_classifier", "train the classifier that FID is measured with"),
    "demo": Command("ddpm_ms.cli.demo", "a web page to sample, guide and inpaint with a model (needs .[demo])"),
    "train-text-encoder": Command("ddpm_ms.cli.train_text_encoder", "train the text-image model of --prompt guidance"),
    "check-ops": Command("ddpm_ms.cli.check_ops", "audit the GPU/Ascend path's primitives against their documented platforms"),
}
PROG = "ddpm-ms"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [flags]   ({PROG} COMMAND --help for its flags)", "",
             "Denoising diffusion models in MindSpore.", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "options:", f"  {'-h, --help':<{width}}  show this message and exit",
              f"  {'--version':<{width}}  show the version and exit"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"{PROG}: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} "
              f"(see {PROG} --help)", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as e:
        if e.name != command.module:
            raise
        print(f"{PROG}: error: {name} is not available in this version of ddpm_ms ({command.module} is missing)",
              file=sys.stderr)
        return 2
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
