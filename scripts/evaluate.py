#!/usr/bin/env python
"""Measure sample quality (FID and friends): `python scripts/evaluate.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
