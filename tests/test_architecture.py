"""docs/architecture.md's module map lists exactly the package's modules, and no two modules share a name."""
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ddpm_ms"


def package_modules() -> set[str]:
    """Every module of the package by its dotted name (a package by its own name)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_module_map_lists_every_module_once():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(ddpm_ms[\w.]*)` \|", section, re.M)
    assert len(listed) == len(set(listed)), [m for m, n in Counter(listed).items() if n > 1]
    missing, stale = package_modules() - set(listed), set(listed) - package_modules()
    assert not missing and not stale, f"not in docs/architecture.md: {sorted(missing)}; no longer in the package: {sorted(stale)}"


def test_no_two_modules_share_a_name():
    """A module's last name part is unique across the package (packages included): `files` and
    `pipeline.files`, or `training` and `textimage.training`, read as the same thing in imports and tracebacks."""
    last = Counter(name.rsplit(".", 1)[-1] for name in package_modules())
    assert not [n for n, count in last.items() if count > 1], sorted(n for n, count in last.items() if count > 1)
