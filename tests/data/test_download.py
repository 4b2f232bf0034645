"""The download helper, pointed at local file:// copies (tests never touch the network)."""
import pytest

from ddpm_ms.data import download as dl
from ddpm_ms.data.paths import DEFAULT_ROOTS, OFFICIAL


def test_downloads_and_verifies_md5(tmp_path, monkeypatch):
    source = DEFAULT_ROOTS["fashion_mnist"]
    files = OFFICIAL["fashion-mnist"][1]
    monkeypatch.setitem(OFFICIAL, "fashion-mnist", (["file:///nonexistent-mirror/", source.as_uri() + "/"], files))
    got = dl.download("fashion-mnist", tmp_path / "fm")
    assert sorted(p.name for p in got) == sorted(files)
    for p in got:
        assert dl.md5(p) == files[p.name]
    assert not list((tmp_path / "fm").glob(".*"))  # no partial files left


def test_bad_checksum_leaves_nothing_behind(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = OFFICIAL["mnist"][1]
    for name in files:
        (mirror / name).write_bytes(b"tampered")
    monkeypatch.setitem(OFFICIAL, "mnist", ([mirror.as_uri() + "/"], files))
    with pytest.raises(RuntimeError, match="md5"):
        dl.download("mnist", tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def test_official_urls_are_https_or_known_http():
    for name, (bases, files) in OFFICIAL.items():
        assert len(files) == 4 and all(len(m) == 32 for m in files.values())
        assert all(b.startswith(("http://", "https://")) and b.endswith("/") for b in bases)
