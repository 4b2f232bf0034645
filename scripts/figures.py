#!/usr/bin/env python
"""Draw the forward process or the noise schedules: `python scripts/figures.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
