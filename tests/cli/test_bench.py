"""scripts/bench.py: one JSON object with the documented fields; bad arguments are refused.
(Speed itself is never asserted: the machines are shared and noisy.)"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_ms import benchmark
from ddpm_ms.cli import bench

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("args", [["train", "--batch-size", "0"], ["sample", "--seconds", "-1"],
                                  ["fly"], ["train", "--modes", "eager"]])
def test_bad_arguments_exit_2_with_a_message(args):
    with pytest.raises(SystemExit) as err:
        code = bench.main(args)
        raise SystemExit(code)
    assert err.value.code == 2


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "dit", "--preset", "fashion_mnist"], "fashion_mnist is a unet preset, not a dit one"),
    (["train", "--model", "unet", "--preset", "dit_mnist"], "dit_mnist is a dit preset, not a unet one"),
    (["train", "--preset", "dit_mnist", "--dim", "32"], "--dim sizes a U-Net"),
    (["train", "--preset", "celeba"], "unknown preset 'celeba'"),
])
def test_contradicting_model_flags_are_refused_before_measuring(args, needle, capsys):
    assert bench.main(args) == 2
    assert needle in capsys.readouterr().err


def test_variants_are_reported_relative_to_the_first_named(monkeypatch):
    # The driver's arithmetic on given worker figures (the workers themselves run in the slow tests).
    speeds = {("accum4", "graph"): 50.0, ("accum4", "pynative"): 10.0, ("plain", "graph"): 200.0,
              ("plain", "pynative"): 8.0, ("clip", "graph"): 75.0}

    def worker(job):
        speed = speeds.get((job.variant, job.mode))
        return {"img_per_s": speed} if speed else {"error": "worker exited with 1"}

    monkeypatch.setattr(benchmark, "run_worker", worker)
    result = benchmark.bench(benchmark.Measurement(task="train", batch_size=4), variants=["accum4", "plain", "clip"],
                             progress=False)
    assert result["relative_img_per_s"] == {"accum4": {"graph": 1.0, "pynative": 1.0},
                                            "plain": {"graph": 4.0, "pynative": 0.8},
                                            "clip": {"graph": 1.5}}  # a failed measurement is left out
    assert (result["accum4"]["graph_over_pynative"], result["plain"]["graph_over_pynative"]) == (5.0, 25.0)
    assert "graph_over_pynative" not in result["clip"]
    assert result["task"] == "train" and result["batch_size"] == 4


@pytest.mark.slow
def test_train_benchmark_prints_one_json_object_per_mode():
    proc = _run("train", "--batch-size", "2", "--seconds", "0", "--warmup", "0", "--dim", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["task"] == "train" and result["batch_size"] == 2 and "cores" in result["machine"]
    for mode in ("graph", "pynative"):
        r = result[mode]
        assert "error" not in r, r
        assert r["img_per_s"] > 0 and r["compile_s"] >= 0 and r["peak_rss_mb"] > 100
        assert r["calls"] >= 3 and r["dim"] == 8
    assert result["graph_over_pynative"] == pytest.approx(
        result["graph"]["img_per_s"] / result["pynative"]["img_per_s"], rel=0.01)


def test_model_dit_measures_the_dit_preset():
    proc = _run("train", "--model", "dit", "--batch-size", "2", "--seconds", "0", "--warmup", "0", "--modes", "graph",
                "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)["graph"]
    assert (r["preset"], r["arch"], r["patch_size"], r["hidden_size"], r["depth"]) == ("dit_mnist", "dit", 4, 64, 3)
    assert r["params"] == 255_824 and r["img_per_s"] > 0  # the count test_dit.py derives layer by layer


@pytest.mark.slow
def test_train_variants_report_their_speed_relative_to_the_first():
    proc = _run("train", "--batch-size", "2", "--seconds", "0", "--warmup", "0", "--dim", "8", "--modes", "graph",
                "--variants", "plain", "accum4", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    plain, accum = result["plain"]["graph"], result["accum4"]["graph"]
    assert (plain["variant"], plain["ema_every"], plain["clip"], plain["grad_accum"]) == ("plain", 0, False, 1)
    assert (accum["variant"], accum["ema_every"], accum["clip"], accum["grad_accum"]) == ("accum4", 10, True, 4)
    assert result["relative_img_per_s"]["accum4"]["graph"] == pytest.approx(
        accum["img_per_s"] / plain["img_per_s"], rel=0.01)


@pytest.mark.slow
def test_sample_benchmark_reports_each_sampler():
    proc = _run("sample", "--batch-size", "2", "--seconds", "0", "--dim", "8", "--modes", "graph", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    # DDPM's 1000 steps are timed on 20 of them (each step costs the same) and scaled.
    for sampler, steps, timed in (("ddpm", 1000, 20), ("ddim", 50, 50), ("dpm++", 20, 20)):
        r = result[sampler]["graph"]
        assert "error" not in r, r
        assert r["sampler"] == sampler and (r["steps"], r["timed_steps"]) == (steps, timed) and r["calls"] >= 2
        assert r["model_calls_per_s"] == pytest.approx(1000 / r["step_ms"], rel=0.01)
        assert r["img_per_s"] == pytest.approx(2 * r["model_calls_per_s"] / steps, rel=0.02)
        assert r["denoised_img_per_s"] == pytest.approx(2 * r["model_calls_per_s"], rel=0.01)
        assert r["model_ms_median"] > 0 and 0 < r["loop_ms_per_step"] < r["step_ms"]
        assert r["loop_overhead_pct"] == pytest.approx(100 * r["loop_ms_per_step"] / r["step_ms"], rel=0.05)

