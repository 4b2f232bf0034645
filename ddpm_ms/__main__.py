"""`python -m ddpm_ms COMMAND [flags]`: the same as the installed `ddpm-ms` command."""
import sys

from ddpm_ms.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
