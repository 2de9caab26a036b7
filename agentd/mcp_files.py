"""A small MCP filesystem server over stdio: the files below its working directory only.

    python -m agentd.mcp_files [DIR]     # DIR default: the working directory

A declared agent starts it with ``[mcp.files] command = "python", args = ["-m",
"agentd.mcp_files"]`` (examples/agents/librarian.toml): the agent runs it in the task's
workspace, so its tools see that workspace and nothing else (paths that leave it, through
``..`` or a symbolic link, are refused). Read-only: list, read and search.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

READ_LIMIT = 60_000
LIST_LIMIT = 500
SEARCH_LIMIT = 200
SKIP = {".git", ".tmp", "__pycache__", "node_modules", ".venv"}

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd()).resolve()
server = MCPServer("files", instructions="Read-only access to the files of one directory.")


def _resolve(path: str) -> Path:
    p = (ROOT / path).resolve()
    if p != ROOT and ROOT not in p.parents:
        raise ToolError(f"{path!r} is outside the directory")
    return p


def _files(under: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(under):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if not p.is_symlink():
                out.append(p)
    return out


@server.tool()
def list_files(path: str = "") -> str:
    """List the files below a directory (relative path; empty for all) with their sizes."""
    files = _files(_resolve(path))
    lines = [f"{p.relative_to(ROOT)}\t{p.stat().st_size}" for p in files[:LIST_LIMIT]]
    if len(files) > LIST_LIMIT:
        lines.append(f"[... {len(files) - LIST_LIMIT} more]")
    return "\n".join(lines) or "(no files)"


@server.tool()
def read_file(path: str) -> str:
    """Read a text file (relative path)."""
    p = _resolve(path)
    if p.is_symlink() or not p.is_file():
        raise ToolError(f"{path!r} is not a file")
    data = p.read_bytes()[: READ_LIMIT + 1]
    text = data[:READ_LIMIT].decode("utf-8", errors="replace")
    return text + ("\n[... cut ...]" if len(data) > READ_LIMIT else "")


@server.tool()
def search(pattern: str, path: str = "") -> str:
    """Search the files for a regular expression; FILE:LINE: text for each match."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"bad pattern: {exc}") from None
    hits = []
    for p in _files(_resolve(path)):
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for n, line in enumerate(lines, 1):
            if rx.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:200]}")
                if len(hits) >= SEARCH_LIMIT:
                    return "\n".join([*hits, "[... more matches ...]"])
    return "\n".join(hits) or "(no matches)"


if __name__ == "__main__":
    server.run("stdio")
