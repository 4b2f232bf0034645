"""python scripts/check_ops.py [--arch ...] [--json]: audit the primitives of the GPU/Ascend path against
MindSpore's documented platforms (ddpm_ms.op_audit says how); exit 1 when one is not documented for both."""
from __future__ import annotations

import argparse
import json
import sys

from ddpm_ms import op_audit
from ddpm_ms.cli.command import command
from ddpm_ms.registry import BACKBONES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="check_ops.py", description="Audit the primitives of the GPU/Ascend path "
                                "against MindSpore's documented platforms.")
    p.add_argument("--arch", nargs="+", choices=BACKBONES.names(), default=list(BACKBONES.names()),
                   help="the backbones whose reference presets are audited (default: all)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    return p


def run(args) -> int:
    try:
        rows, text = op_audit.run(args.arch)
    except RuntimeError as e:  # a backbone's graphs did not compile: the audit failed (exit 1), not the flags
        print(f"check_ops.py: error: {e}", file=sys.stderr)
        return 1
    bad = [r["primitive"] for r in rows if not r["ok"]]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(text)
        print(f"\n{len(rows)} primitives (graph plumbing left out); "
              + ("all documented for Ascend and GPU" if not bad else f"NOT documented for Ascend and GPU: {', '.join(bad)}"))
    return 1 if bad else 0


main = command("check_ops.py", parser, run)

if __name__ == "__main__":
    sys.exit(main())
