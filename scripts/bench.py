#!/usr/bin/env python
"""Measure training and sampling speed and memory: `python scripts/bench.py all --json`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
