"""Every relative link and image in README.md, CHANGELOG.md and docs/**/*.md resolves to a file in
the repository, every `#anchor` names a heading of its target (GitHub's slugs), and no link leaves
the repository. Web links (http:, https:, mailto:) are not followed."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]


def doc_files(root: Path = REPO) -> list[Path]:
    files = [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_HTML = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']*)[\"']", re.I)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_HTML_ID = re.compile(r"<[^>]+\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(text: str) -> str:
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """The link and image targets of a Markdown text, outside code blocks and code spans."""
    text = _without_code(text)
    found = _INLINE.findall(text) + _REFERENCE_DEF.findall(text) + _HTML.findall(text)
    return [t for t in found if t]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code marks, link targets, emphasis and HTML dropped),
    lower case, without punctuation other than '-' and '_', spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*)", "", text)
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file offers: its headings' slugs (repeats get -1, -2, ... as on GitHub)
    and explicit HTML ids."""
    text = path.read_text(encoding="utf-8")
    code_free = _FENCE.sub("", text)
    seen: dict[str, int] = {}
    out = set(_HTML_ID.findall(code_free))
    for _, heading in _HEADING.findall(code_free):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def problems(doc: Path, root: Path = REPO) -> list[str]:
    """One line per link of `doc` that does not resolve inside `root`."""
    root = root.resolve()
    out = []
    for target in links(doc.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue  # http:, https:, mailto:: not followed
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            dest = doc.resolve()
        elif path_part.startswith("/"):
            dest = (root / path_part.lstrip("/")).resolve()
        else:
            dest = (doc.parent / path_part).resolve()
        if dest != root and root not in dest.parents:
            out.append(f"{target}: leaves the repository")
            continue
        if not dest.is_file():
            out.append(f"{target}: no such file ({dest.relative_to(root)})")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            out.append(f"{target}: {dest.relative_to(root)} has no heading with the anchor #{anchor}")
    return out


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve_inside_the_repository(doc):
    bad = problems(doc)
    assert not bad, f"{doc.relative_to(REPO)}:\n  " + "\n  ".join(bad)


def test_the_docs_are_found():
    names = {p.relative_to(REPO).as_posix() for p in doc_files()}
    assert {"README.md", "docs/architecture.md", "docs/experiments/README.md"} <= names, names


def test_github_slugs():
    assert slug("Where the ODE starts: t = 990, not 999") == "where-the-ode-starts-t--990-not-999"
    assert slug("Where the ODE starts (`lambda_min_clipped`)") == "where-the-ode-starts-lambda_min_clipped"
    assert slug("With the preset's guidance the ODE stays ahead") == "with-the-presets-guidance-the-ode-stays-ahead"
    assert slug("The interval chosen on the GPU proxy (2026-11-27, H200)") == \
        "the-interval-chosen-on-the-gpu-proxy-2026-11-27-h200"
    assert slug("Run [checkpoints](x.md) and **EMA**") == "run-checkpoints-and-ema"


def test_the_checker_finds_what_is_broken(tmp_path):
    """The checker itself: a broken file, a missing anchor and a link out of the repository are
    reported; links in code, web links and good anchors are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Its part: one\n\n<a id=\"here\"></a>\n")
    (tmp_path / "img.png").write_bytes(b"")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# Top\n\n"
        "[ok](docs/page.md#its-part-one) [ok](docs/page.md#here) [ok](#top) ![ok](img.png) "
        "<img src=\"img.png\"> [web](https://example.com/x.md) `[code](nowhere.md)`\n\n"
        "```\n[fenced](nowhere.md)\n```\n\n"
        "[gone](docs/missing.md) [anchor](docs/page.md#no-such-part) ![pic](docs/missing.png) "
        "[out](../elsewhere/design.md) <img src=\"../outside.png\"> [self](#nothing)\n"
        "[ref]: docs/also_missing.md\n")
    bad = problems(doc, root=tmp_path)
    assert len(bad) == 7, bad
    assert sum("no such file" in b for b in bad) == 3, bad
    assert sum("leaves the repository" in b for b in bad) == 2, bad
    assert sum("no heading with the anchor" in b for b in bad) == 2, bad
