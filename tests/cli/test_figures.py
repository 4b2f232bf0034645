"""scripts/figures.py: the forward-process and schedule figures, and clear errors."""
from PIL import Image

from ddpm_ms.cli.figures import main


def test_forward_and_schedule_figures(tmp_path, capsys):
    assert main(["forward", "--size", "32", "--t", "0", "500", "999", "--out", str(tmp_path / "f.png")]) == 0
    assert main(["schedules", "--timesteps", "200", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "f.png") as f, Image.open(tmp_path / "s.png") as s:
        assert f.size[0] > 2 * f.size[1] and s.size[0] > 2 * s.size[1]
    assert str(tmp_path / "f.png") in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["forward", "--image", str(tmp_path / "none.png")]) == 2
    assert "none.png does not exist" in capsys.readouterr().err
    assert main(["forward", "--t", "1000", "--out", str(tmp_path / "f.png")]) == 2
    assert "0..999" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["forward", "--image", str(bad)]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
