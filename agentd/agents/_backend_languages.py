"""The languages the backend agent builds in: how their tests run, and the Python packages
the agent's interpreter offers."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

PYTHON_PACKAGES = (
    "fastapi",
    "uvicorn",
    "starlette",
    "httpx",
    "pydantic",
    "flask",
    "sqlalchemy",
    "requests",
    "aiohttp",
    "pytest_asyncio",
)
WEB_FRAMEWORKS = {"fastapi": ("fastapi", "uvicorn", "httpx"), "flask": ("flask",)}


@dataclass(frozen=True)
class Language:
    name: str
    command: tuple[str, ...]  # the test command
    tool: str  # the program that must be installed
    hint: str  # how tests are written


def language_for(name: str) -> Language:
    n = (name or "python").strip().lower()
    if n in ("python", "python3", "py", ""):
        return Language(
            "python",
            (
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--color=no",
                "-o",
                "addopts=",
                # hypothesis' plugin alone takes seconds to import; its
                # tests run without it
                "-p",
                "no:hypothesispytest",
            ),
            sys.executable,
            "pytest functions in files named test_*.py next to the code "
            "(import the code as a module of the project root)",
        )
    if n in ("javascript", "js", "node", "nodejs"):
        return Language(
            "javascript",
            ("node", "--test"),
            "node",
            "node:test tests in files named *.test.js (run with `node --test`)",
        )
    if n in ("go", "golang"):
        return Language("go", ("go", "test", "./..."), "go", "Go tests in *_test.go files, with a go.mod")
    if n in ("rust", "rs"):
        return Language(
            "rust", ("cargo", "test", "--offline"), "cargo", "#[test] functions, a Cargo.toml without external crates"
        )
    return Language(n, (), n, 'tests, and the command that runs them in service.json as "test"')


def installed_python_packages() -> tuple[list[str], list[str]]:
    have: list[str] = []
    missing: list[str] = []
    for name in PYTHON_PACKAGES:
        (have if importlib.util.find_spec(name) is not None else missing).append(name)
    return have, missing


def test_tool(lang: Language, test_cmd: str) -> str:
    """The program that runs the tests, for the checks table ("pytest", "node", ...)."""
    if lang.name == "python" and (not test_cmd or "pytest" in test_cmd):
        return "pytest"
    try:
        words = shlex.split(test_cmd)
    except ValueError:
        words = test_cmd.split()
    return Path(words[0]).name if words else lang.tool
