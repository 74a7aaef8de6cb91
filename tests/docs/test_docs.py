"""The docs site's structure: every page in the nav, every public name in the API
reference, every snippet included and run, nothing pointing outside the repository.

(``mkdocs build --strict`` itself runs in CI, with the ``docs`` extra.)
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"

API_PAGES = {
    "trio_agents": "api/trio_agents.md",
    "trio_agents.rtc": "api/rtc.md",
    "trio_agents.api": "api/api.md",
    "trio_agents.testing": "api/testing.md",
}

#: Pages other work is rewriting right now; they still mention the old
#: contract's section numbers.  Drop an entry once its page no longer does.
def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") : text.index("\nmarkdown_extensions:")]
    return re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.MULTILINE)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if SNIPPETS not in p.parents)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav))
    on_disk = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert set(nav) == on_disk


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_every_public_name_is_in_the_api_reference(module: str) -> None:
    page = (DOCS / API_PAGES[module]).read_text()
    names = [n for n in importlib.import_module(module).__all__ if n != "__version__"]
    missing = [
        n for n in names if f"::: {module}.{n}\n" not in page and f"| `{n}` |" not in page
    ]
    assert missing == []
    # and nothing documented that is no longer public
    documented = re.findall(rf"^::: {re.escape(module)}\.(\w+)$", page, flags=re.MULTILINE)
    submodules = {"pytest_plugin", "strategies"} if module == "trio_agents.testing" else set()
    assert set(documented) <= set(names) | submodules


def test_every_snippet_is_included_and_every_include_exists() -> None:
    included: set[str] = set()
    for page in _pages():
        for name in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), flags=re.MULTILINE):
            file = name.split(":", 1)[0]
            assert (SNIPPETS / file).exists() or (ROOT / "examples" / file).exists(), name
            included.add(file)
    snippets = {p.relative_to(SNIPPETS).as_posix() for p in SNIPPETS.rglob("*.py")}
    assert snippets <= included


def test_every_snippet_is_run_by_a_test() -> None:
    tests = "".join(p.read_text() for p in (ROOT / "tests" / "docs").glob("test_*.py"))
    for path in SNIPPETS.rglob("*.py"):
        if path.parent == SNIPPETS:
            assert f"import {path.stem}\n" in tests, path.name
        else:  # a whole user test file (quickstart/, testing/): copied into a pytester run
            assert f'/ "{path.parent.name}"' in tests, path


@pytest.mark.parametrize("page", [p.relative_to(DOCS).as_posix() for p in _pages()])
def test_pages_point_only_inside_the_repository(page: str) -> None:
    text = (DOCS / page).read_text()
    # no machine paths (the folders of the machines this was written on)
    assert not re.search(r"/(work|root|home)/\w", text)
    assert not re.search(r"\breference/\w+\.md", text)
    assert not re.search(r"\bSPEC\b", text)
    for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
        assert (DOCS / page).parent.joinpath(target).resolve().exists(), target


def test_the_testing_guide_says_trio_mode_is_needed() -> None:
    assert "trio_mode = true" in (DOCS / "testing.md").read_text()
