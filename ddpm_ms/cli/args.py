"""Argument types shared by the scripts: a bad number is one clear argparse error."""
from __future__ import annotations

import argparse


def _number(convert, what: str, ok, requirement: str):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value
    return parse


positive_int = _number(int, "an integer", lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, "an integer", lambda v: v >= 0, "zero or positive")
non_negative_float = _number(float, "a number", lambda v: v >= 0, "zero or positive")
positive_float = _number(float, "a number", lambda v: v > 0, "positive")
unit_float = _number(float, "a number", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
