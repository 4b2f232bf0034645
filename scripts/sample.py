#!/usr/bin/env python
"""Draw images from a trained model: `python scripts/sample.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.sample import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
