"""The documentation renders as plain Markdown with working links, and what it generates is current.

* Every relative link in README.md and docs/*.md names a file that exists,
  and a ``#anchor`` names a heading of that file (GitHub's anchor rules).
* docs/configuration.md is exactly what scripts/gen_config_reference.py
  renders from issuer/settings.py, so a new or renamed setting, or a changed
  default or description, fails here until the file is regenerated.
* Every test the threat model cites (``tests/...py::test_name`` or a bare
  `` `test_name` ``) exists, so a renamed test cannot leave a control unproven.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return _INLINE_LINK.findall(body) + _REFERENCE_DEF.findall(body)


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set(_HTML_ANCHOR.findall(text))
    for _, title in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http:, https:, mailto: ... are not checked here
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(root) if dest.is_relative_to(root) else dest} "
                            "does not exist")
            continue
        if fragment and dest.suffix == ".md" and unquote(fragment) not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading with anchor #{fragment} in {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Key rotation, step by step\n", encoding="utf-8")
    doc = tmp_path / "page.md"
    doc.write_text(
        "# Page\n\n## Run `issuer serve`\n\n"
        "[ok](other.md) [ok](other.md#key-rotation-step-by-step) [ok](#run-issuer-serve) [web](https://x.example)\n"
        "[gone](missing.md) [bad anchor](other.md#key-rotation) [bad local](#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n`[span](ignored.md)`\n",
        encoding="utf-8",
    )
    problems = broken_links(doc, root=tmp_path.resolve())
    assert [p.split(":")[0] for p in problems] == ["missing.md", "other.md#key-rotation", "#nowhere"], problems


def test_heading_anchors_follow_github() -> None:
    text = "# The `issuer` CLI\n## Backup and restore\n## Backup and restore\n### What's cached, where?\n"
    assert anchors(text) == {"the-issuer-cli", "backup-and-restore", "backup-and-restore-1", "whats-cached-where"}


# --------------------------------------------------------------------------- generated configuration reference


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated_from_settings() -> None:
    generated = _generator().render()
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/configuration.md is stale: run python scripts/gen_config_reference.py"


def test_configuration_reference_names_every_setting() -> None:
    from issuer.settings import Settings

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs description= (it is rendered into docs/configuration.md)"
        assert f"`ISSUER_{name.upper()}`" in text


# --------------------------------------------------------------------------- tests the docs cite


def _test_functions() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names = set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M))
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("doc", ["docs/threat-model.md", "docs/architecture.md", "docs/operations.md"])
def test_cited_tests_exist(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    tests = _test_functions()
    everywhere = set().union(*tests.values())
    missing = [f"{f}::{t}" for f, t in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text)
               if t not in tests.get(f, set())]
    missing += [t for t in re.findall(r"`(test_\w+)`", text) if t not in everywhere]
    assert missing == []
