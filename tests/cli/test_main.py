"""The installed `ddpm-ms` command (and `python -m ddpm_ms`): it routes each subcommand to its module,
refuses an unknown one in one line, lists the commands without loading MindSpore, and no command
writes into the package by default."""
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import ddpm_ms
from ddpm_ms.cli import train_classifier
from ddpm_ms.cli.main import COMMANDS, Command, main, usage

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(ddpm_ms.__file__).resolve().parent


def own_help(module_name, capsys) -> str:
    """What the module prints for --help when called directly (scripts/*.py)."""
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module_name).main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command_on_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1 and command.summary in lines[0], (name, out)
    assert set(COMMANDS) == {"train", "sample", "evaluate", "export", "bench", "figures", "train-classifier", "demo",
                             "train-text-encoder", "check-ops"}


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "export"])
def test_subcommand_help_is_the_modules_own(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    routed = capsys.readouterr().out
    assert routed.startswith("usage: ") and routed == own_help(COMMANDS[name].module, capsys)


def test_export_routes_to_its_module_or_says_it_is_missing(capsys):
    if importlib.util.find_spec("ddpm_ms.cli.export") is None:  # the lead's module has not landed yet
        assert main(["export", "--help"]) == 2
        assert "export is not available" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as e:
            main(["export", "--help"])
        assert e.value.code == 0 and capsys.readouterr().out == own_help("ddpm_ms.cli.export", capsys)


def test_arguments_and_exit_status_pass_through(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["figures", "schedules", "--timesteps", "50", "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["figures", "forward", "--image", str(tmp_path / "none.png")]) == 2
    assert "none.png does not exist" in capsys.readouterr().err


def test_unknown_command_is_one_clear_error(capsys):
    assert main(["smaple", "--steps", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "unknown command 'smaple'" in captured.err and "sample" in captured.err


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == usage()


def test_a_missing_module_is_named(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "ghost", Command("ddpm_ms.cli.ghost", "not there"))
    assert main(["ghost"]) == 2
    assert "ghost is not available" in capsys.readouterr().err


def test_python_m_lists_the_commands_without_loading_mindspore():
    code = ("import runpy, sys\n"
            "sys.argv = ['ddpm_ms', '--help']\n"
            "try:\n    runpy.run_module('ddpm_ms', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'mindspore' not in sys.modules, 'ddpm-ms --help imported MindSpore'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == usage()


def test_pyproject_installs_the_command_and_the_shipped_pipeline():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, attr = project["project"]["scripts"]["ddpm-ms"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main
    assert "pretrained/**/*" in project["tool"]["setuptools"]["package-data"]["ddpm_ms"]


def test_export_script_is_a_shim_like_the_others():
    export, sample = (REPO / "scripts" / f"{n}.py" for n in ("export", "sample"))
    assert "from ddpm_ms.cli.export import main" in export.read_text()
    assert export.stat().st_mode & 0o111 and sample.stat().st_mode & 0o111


def test_train_classifier_writes_outside_the_package_by_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(train_classifier.CLASSIFIER_ENV, raising=False)
    assert train_classifier.parser().parse_args(["--data", "mnist"]).out is None  # so main uses default_out
    out = train_classifier.default_out("mnist").resolve()
    assert out == tmp_path / "classifiers" / "mnist_classifier.ckpt" and not out.is_relative_to(PACKAGE)
    monkeypatch.setenv(train_classifier.CLASSIFIER_ENV, str(tmp_path / "mine"))
    assert train_classifier.default_out("fashion_mnist") == tmp_path / "mine" / "fashion_mnist_classifier.ckpt"
