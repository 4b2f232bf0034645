"""scripts/figures.py: the forward-process and schedule figures, and clear errors."""
import numpy as np
from PIL import Image

from ddpm_ms import viz
from ddpm_ms.cli.figures import main
from ddpm_ms.diffusion import NoiseSchedule


def test_forward_and_schedule_figures(tmp_path, capsys, monkeypatch):
    figures, save = [], viz._save_figure
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path, **kw: figures.append(fig) or save(fig, path, **kw))
    assert main(["forward", "--size", "32", "--t", "0", "500", "999", "--out", str(tmp_path / "f.png")]) == 0
    assert str(tmp_path / "f.png") in capsys.readouterr().out
    forward = figures[0].axes  # one picture per asked timestep, titled with it, at the asked size
    assert [ax.get_title().split("\n")[0] for ax in forward] == ["t = 0", "t = 500", "t = 999"]
    assert all(ax.get_images()[0].get_array().shape == (32, 32, 3) for ax in forward)
    assert main(["schedules", "--timesteps", "200", "--schedules", "linear", "cosine", "--gammas", "0", "1",
                 "--out", str(tmp_path / "s.png")]) == 0
    betas, alpha_bars, weights = figures[1].axes
    for line, name in zip(betas.get_lines(), ("linear", "cosine"), strict=True):
        assert line.get_label() == name
        np.testing.assert_array_equal(line.get_ydata(), NoiseSchedule(200, name).betas)  # T from --timesteps
    assert [line.get_label() for line in weights.get_lines()] == ["gamma = 0", "gamma = 1"]
    for name in ("f.png", "s.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"


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
