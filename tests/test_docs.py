"""The documentation cannot drift from the code: every ```python block of README.md and
docs/**/*.md runs (each in a fresh namespace), every relative link resolves, the README stays
under 12 KB and its test command is the one CI runs.

A block opts out with the HTML comment ``<!-- skip-test -->`` on the line before its fence
(for multi-minute runs only).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # snippets that plot must not need a display

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_LIMIT = 12_000  # bytes

SKIP_MARK = "<!-- skip-test -->"
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")
# [text](target) and ![alt](target); the target ends at whitespace or ')'
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blocks(path: Path) -> list[tuple[int, str, str, bool]]:
    """``(line, language, code, skipped)`` for every fenced block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].strip())
        if not match:
            i += 1
            continue
        fence, lang = match.group(1), match.group(2).lower()
        start = i
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((start + 1, lang, "\n".join(body) + "\n", previous == SKIP_MARK))
        i += 1
    return blocks


def _prose(path: Path) -> str:
    """The file's text outside fenced code blocks (links inside code are not links)."""
    kept, inside, fence = [], False, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _FENCE.match(line.strip())
        if match and (not inside or line.strip().startswith(fence)):
            inside, fence = (not inside), match.group(1)
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def _python_blocks() -> list:
    params = []
    for path in DOC_FILES:
        for line, lang, code, skipped in _blocks(path):
            if lang not in ("python", "py"):
                continue
            name = f"{path.relative_to(ROOT)}:{line}"
            marks = [pytest.mark.skip(reason=SKIP_MARK)] if skipped else []
            params.append(pytest.param(name, code, id=name, marks=marks))
    return params


@pytest.mark.parametrize(("name", "code"), _python_blocks())
def test_code_block_runs(name: str, code: str) -> None:
    namespace = {"__name__": "__docs__"}
    exec(compile(code, name, "exec"), namespace)  # noqa: S102 - the docs are the test


def test_readme_size() -> None:
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; keep it <= {README_LIMIT:,}"


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of ``path`` (lower case, punctuation dropped)."""
    anchors = set()
    for line in _prose(path).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # a URL (http:, mailto:)
        file, _, anchor = target.partition("#")
        resolved = path if not file else path.parent / file.split("?", 1)[0]
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files or headings: {broken}"


def test_readme_test_command_is_ci() -> None:
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ci_command = ci_lines[-1]
    readme_commands = [
        cmd.strip()
        for _, lang, code, _ in _blocks(README)
        if lang in ("bash", "sh", "shell", "console")
        for cmd in code.splitlines()
        if "pytest" in cmd
    ]
    assert readme_commands == [ci_command], (readme_commands, ci_command)


def test_blocks_are_found() -> None:
    """The parser sees the README's snippets (a broken fence would silently test nothing)."""
    langs = [lang for _, lang, _, _ in _blocks(README)]
    assert langs.count("python") >= 3 and langs.count("bash") >= 2, langs


def test_the_policies_page_lists_every_registered_policy():
    """The policy table of docs/policies.md cannot drift from the registry."""
    from growenv.policies import POLICIES

    page = (ROOT / "docs" / "policies.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)[`:]", page, flags=re.M)
    missing = [e.spec for e in POLICIES.values() if e.spec.partition(":")[0] not in rows]
    assert not missing, f"docs/policies.md has no table row for {missing}"
