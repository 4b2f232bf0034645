"""Argument parsing for the scripts in scripts/; thin by design."""
