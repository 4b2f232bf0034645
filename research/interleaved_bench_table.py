"""The table of research/interleaved_bench.sh's output: per measurement, each round's before and after
figure and the medians' ratio.  python research/interleaved_bench_table.py OUT_DIR"""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])


def figures(side: str) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    for path in sorted(out.glob(f"{side}_*_train.json")):
        rows.setdefault("train b32, img/s", []).append(json.loads(path.read_text())["graph"]["img_per_s"])
    for path in sorted(out.glob(f"{side}_*_sample.json")):
        for sampler, by_mode in json.loads(path.read_text()).items():
            if isinstance(by_mode, dict) and "graph" in by_mode:
                rows.setdefault(f"{sampler} b64, model calls/s", []).append(by_mode["graph"]["model_calls_per_s"])
    return rows


before, after = figures("before"), figures("after")
print("| measurement | before (rounds) | after (rounds) | after / before, medians |")
print("| --- | --- | --- | --- |")
for name in before:
    b, a = before[name], after.get(name, [])
    ratio = statistics.median(a) / statistics.median(b) if a else float("nan")
    print(f"| {name} | {', '.join(f'{v:.1f}' for v in b)} | {', '.join(f'{v:.1f}' for v in a)} | {ratio:.3f} |")
