#!/usr/bin/env python
"""Write a pipeline directory from a training run: `python scripts/export.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
