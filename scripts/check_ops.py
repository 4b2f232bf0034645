#!/usr/bin/env python
"""Audit the GPU/Ascend path's MindSpore primitives against their documented platforms: `python scripts/check_ops.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.check_ops import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
