"""export.py: which evaluation a model card quotes, and one clear line for a bad source or target."""
import json

from ddpm_ms.cli.export import evaluation_of, main


def test_the_card_quotes_the_largest_evaluation_of_that_checkpoint_and_weights(tmp_path):
    records = [
        {"step": 7500, "weights": "ema", "num": 10000, "fid": 7.1},
        {"step": 7500, "weights": "ema", "num": 2000, "fid": 9.4},
        {"step": 7500, "weights": "ema", "num": 10000, "fid": 6.9},     # newer, same size: this one
        {"step": 7500, "weights": "raw", "num": 50000, "fid": 5.0},     # other weights
        {"step": 5000, "weights": "ema", "num": 50000, "fid": 8.0},     # another checkpoint
        {"step": 7500, "weights": "ema", "num": 90000, "fid": 1.0, "during_training": True},
    ]
    (tmp_path / "eval.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n{cut sho")
    assert evaluation_of(tmp_path, 7500, "ema")["fid"] == 6.9
    assert evaluation_of(tmp_path, 7500, "raw")["fid"] == 5.0
    assert evaluation_of(tmp_path, 1, "ema") is None
    assert evaluation_of(tmp_path / "elsewhere", 7500, "ema") is None


def test_bad_sources_and_targets_are_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"export.py: error: --run {tmp_path / 'nope'} does not exist"
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.json").write_text("{}")
    assert main(["--run", str(tmp_path / "empty_run"), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoints in" in err, err
    assert not (tmp_path / "out").exists(), "nothing is written when the source is bad"
