"""Run scripts/evaluate.py with its printed JSON record amended, for the benchmarks that change how
it samples (timestep_grid.py, autoguidance.py). The record is never appended to the run's
eval.jsonl: it would get there before the amendment, as if from a standard evaluation."""
from __future__ import annotations

import json


def evaluate_with_amended_record(evaluate_args: list[str], amend) -> int:
    """evaluate.main(evaluate_args + --no-log), with `amend(record)` (a dict, changed in place)
    applied to the record it prints."""
    from ddpm_ms.cli import evaluate

    real_print = print

    def keep(*values, **kwargs):
        if len(values) == 1 and isinstance(values[0], str) and values[0].startswith("{"):
            record = json.loads(values[0])
            amend(record)
            values = (json.dumps(record),)
        real_print(*values, **kwargs)

    evaluate.print = keep
    try:
        return evaluate.main([*evaluate_args, *([] if "--no-log" in evaluate_args else ["--no-log"])])
    finally:
        del evaluate.print
