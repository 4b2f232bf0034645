"""The default data root: $DDPM_MS_DATA, else the checkout's data/, else a DataError saying where it looked."""
import pytest

from ddpm_ms.cli.figures import main as figures_main
from ddpm_ms.cli.train_classifier import main as train_classifier_main
from ddpm_ms.data import DataError, load_idx_dataset, scan_image_folder
from ddpm_ms.data import paths


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """ddpm_ms as a non-editable install sees it: no data/ beside the package, DDPM_MS_DATA unset."""
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.setattr(paths, "REPO_DATA", tmp_path / "site-packages" / "data")
    return paths.REPO_DATA


def test_checkout_data_is_the_default(monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    assert paths.running_from_checkout()
    assert paths.default_root("fashion_mnist") == paths.CHECKOUT / "data" / "fashion-mnist"
    images, labels = load_idx_dataset("fashion_mnist", split="test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_env_overrides_the_checkout_and_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert paths.default_root("mnist") == tmp_path / "mnist"
    with pytest.raises(DataError) as e:
        load_idx_dataset("fashion_mnist")
    message = e.value.for_flag("--data")
    # where it looked, where that came from, and what to pass
    assert f"not found in {tmp_path / 'fashion-mnist'}" in message, message
    assert f"DDPM_MS_DATA={tmp_path}" in message and "pass --data DIR" in message, message


def test_installed_package_without_data_says_where_it_looked(installed):
    assert not paths.running_from_checkout() and paths.data_root() is None
    with pytest.raises(DataError) as e:
        load_idx_dataset("fashion_mnist")
    message = e.value.for_flag("--data")
    assert str(installed) in message and "DDPM_MS_DATA is not set" in message, message
    assert "pass --data DIR" in message and "set DDPM_MS_DATA to a folder that holds fashion-mnist/" in message
    with pytest.raises(DataError, match="set DDPM_MS_DATA to a folder that holds cats/"):
        scan_image_folder()


def test_installed_package_reads_an_explicit_folder(installed):
    images, _ = load_idx_dataset("fashion_mnist", paths.CHECKOUT / "data" / "fashion-mnist", split="test")
    assert len(images) == 10000


def test_command_prints_the_missing_data_error_with_its_own_flag(installed, capsys):
    assert train_classifier_main(["--data", "mnist", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pass --root DIR" in err and "DDPM_MS_DATA" in err and str(installed) in err, err


def test_figures_without_the_embedded_cat_asks_for_a_photo(installed, tmp_path, capsys):
    assert figures_main(["forward", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "pass --image PHOTO" in err and "DDPM_MS_DATA" in err, err
    assert not (tmp_path / "f.png").exists()
