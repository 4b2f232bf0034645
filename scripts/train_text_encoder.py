#!/usr/bin/env python
"""Train the text-image model of --prompt guidance: `python scripts/train_text_encoder.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ddpm_ms.cli.train_text_encoder import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
