#!/usr/bin/env python
"""The web demo: `python scripts/demo.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
