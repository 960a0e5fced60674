"""The README and docs/ name only things that exist: every repository path in backticks, every
module run with `-m`, every relative link and its #anchor. Docs drift silently otherwise."""

import re

import pytest

from tests.conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
# Top-level names a path must start with to be a repository path (not results/, a cache, ../shared).
TOP = {p.name for p in REPO.iterdir()} - {".git", ".venv", "results", ".pytest_cache", ".ruff_cache"}
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
PLACEHOLDER = re.compile(r"[<>*…{} ]")


def prose(text: str) -> str:
    return FENCE.sub("", text)


def repo_paths(text: str) -> set[str]:
    """Backticked tokens that name a file or folder of the repository."""
    found = set()
    for token in re.findall(r"`([^`\n]+)`", prose(text)):
        if PLACEHOLDER.search(token) or ("/" not in token and "." not in token):
            continue
        if token.split("/")[0] in TOP:
            found.add(token)
    return found


def modules(text: str) -> set[str]:
    """Our modules run as `python -m X` / `./run.sh py -m X`, in prose and in code blocks."""
    return {m for m in re.findall(r"-m ([A-Za-z_][\w.]*)(?![\w.*])", text) if m.split(".")[0] in TOP}


def links(text: str) -> set[str]:
    return {t for t in re.findall(r"\]\(([^)\s]+)\)", prose(text)) if not re.match(r"[a-z]+:", t)}


def anchors(page) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", prose(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_backticked_repository_path_exists(page):
    missing = sorted(p for p in repo_paths(page.read_text()) if not (REPO / p).exists())
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_run_with_dash_m_exists(page):
    missing = sorted(m for m in modules(page.read_text())
                     if not any((REPO / (m.replace(".", "/") + end)).exists() for end in (".py", "/__init__.py")))
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page.read_text()):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert sorted(broken) == []


def test_the_path_check_sees_paths_links_and_modules():
    text = ("`fl_app/config.py` `analysis/grids/paper.toml` `results/x` `strategies/<name>.py`\n"
            "[page](docs/data.md#caches) [site](https://flower.ai)\n```\n./run.sh py -m clients.make_sample\n```\n")
    assert (repo_paths(text), links(text), modules(text)) == (
        {"fl_app/config.py", "analysis/grids/paper.toml"}, {"docs/data.md#caches"}, {"clients.make_sample"})


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
