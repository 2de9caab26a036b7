"""A PATH in which some host tools are not found, for tests that are about something else.

The architect renders its diagram with ``mmdc`` when the host has it; a host whose Mermaid CLI
cannot start its browser (puppeteer's Chrome not downloaded) then fails the task's render check.
Tests of traces or metrics that only need the architect to talk to the model hide the tool::

    env = {"PATH": path_without(tmp_path, "mmdc")}   # the daemon's and its agents' PATH

Each PATH directory holding one of the tools is replaced by a directory of symlinks to its
other entries; the others are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path


def path_without(root: Path, *tools: str, path: str | None = None) -> str:
    dirs = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    out: list[str] = []
    for i, d in enumerate(dirs):
        if not d or not any(os.path.lexists(os.path.join(d, t)) for t in tools):
            out.append(d)
            continue
        shadow = root / f"path-{i}"
        shadow.mkdir(parents=True, exist_ok=True)
        with os.scandir(d) as entries:
            for e in entries:
                if e.name not in tools and not (shadow / e.name).exists():
                    (shadow / e.name).symlink_to(e.path)
        out.append(str(shadow))
    return os.pathsep.join(out)
