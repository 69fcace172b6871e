"""Every link and path the docs give leads somewhere: relative Markdown links (and their
#anchors) in README.md and docs/*.md, and backticked repository paths like `docs/metrics.md`
or `scripts/soak.sh 30` (its first word)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from belabox_metrics.store.schema import LATEST_VERSION
from tests.helpers import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
TOP_DIRS = [*sorted(p.name for p in REPO_ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")), ".ci"]
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
REPO_PATH = re.compile(r"^(?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[^\s*<>{}$]*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def prose(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def broken_links(doc: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(REPO_ROOT) if dest.is_relative_to(REPO_ROOT) else dest}"
                            " does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


# `owner/repo` right before a path: a file in that repository (Haivision/srt `docs/API/...`).
OTHER_REPO = re.compile(r"\b[\w.-]+/[\w.-]+\s*$")


def broken_paths(doc: Path) -> list[str]:
    problems = []
    text = prose(doc)
    for match in CODE.finditer(text):
        code = match.group(1)
        first = code.split()[0] if code.split() else ""
        if OTHER_REPO.search(text[max(0, match.start() - 60):match.start()]):
            continue
        if REPO_PATH.match(first) and not (REPO_ROOT / first.split("#")[0]).exists():
            problems.append(f"`{code}`: {first} does not exist in the repository")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    assert not broken_links(doc)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_backticked_repository_paths_exist(doc: Path) -> None:
    assert not broken_paths(doc)


def test_the_checks_see_what_they_check(tmp_path: Path) -> None:
    """The checks find links, anchors and paths at all (a regex that matches nothing would
    pass every doc)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(LINK.findall(readme)) >= 5
    assert "docs/metrics.md" in [c.split()[0] for c in CODE.findall(readme)]
    assert "agent-self-metrics" in anchors(REPO_ROOT / "docs" / "metrics.md")
    doc = tmp_path / "x.md"
    doc.write_text("# A `b` (c)\n\n[ok](#a-b-c) [bad](#nope) [gone](missing.md) `docs/nowhere.md`\n"
                   "upstream Haivision/srt `docs/API/statistics.md` is theirs\n"
                   "```\n[in a fence](ignored.md)\n```\n")
    assert broken_links(doc) == ["#nope: no heading with anchor #nope in x.md",
                                 f"missing.md: {(tmp_path / 'missing.md').resolve()} does not exist"]
    assert broken_paths(doc) == ["`docs/nowhere.md`: docs/nowhere.md does not exist in the repository"]


def test_readme_states_the_current_schema_version() -> None:
    stated = re.findall(r"`store/schema\.py`, now version (\d+)", (REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert stated == [str(LATEST_VERSION)]
