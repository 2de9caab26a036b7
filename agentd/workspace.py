"""Task workspaces: one directory per task, and safe paths inside it.

``<root>/<task_id>`` by default. A delegated sub-task works in another task's
workspace when its option ``workspace`` names that task (the manager gives its
sub-agents one project directory: the architect's document, the backend's code
and the frontend's pages end up side by side).

Every path a tool receives from the model goes through `Workspace.resolve`:
relative only, no ``..`` escaping, no symlink leading out. Files are then opened
component by component with O_NOFOLLOW, so a symlink swapped in after the check
(by a sandboxed process, say) cannot redirect a write outside the workspace.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from orchgpt.models import Artifact, Task

from .errors import ToolError

WORKSPACE_OPTION = "workspace"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Not listed as artifacts nor shown to the model: caches, VCS data, scratch space.
SKIP_DIRS = frozenset(
    {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules", ".venv", ".tmp", ".orchgpt"}
)
_KINDS = {
    ".md": "document",
    ".rst": "document",
    ".txt": "document",
    ".mmd": "diagram",
    ".dot": "diagram",
    ".svg": "image",
    ".png": "image",
    ".json": "data",
    ".yaml": "data",
    ".yml": "data",
    ".toml": "data",
}


def workspace_id(task: Task) -> str:
    """The directory name of a task's workspace: its own id, or the id in option ``workspace``."""
    wanted = (getattr(task, "options", None) or {}).get(WORKSPACE_OPTION, "").strip()
    name = wanted or str(task.task_id)
    if not _ID_RE.match(name) or name in (".", ".."):
        raise ToolError(f"invalid workspace name {name!r}: a task id of letters, digits, '.', '_' or '-'")
    return name


def task_workspace(root: Path, task: Task) -> Path:
    """Create (if needed) and return the workspace directory of a task under root.

    agentd's Link takes this as ``workspace_for=functools.partial(task_workspace, root)``.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        # Traversable but not listable: one task's sandbox cannot see the others' names.
        root.mkdir(parents=True, mode=0o711)
    ws = root / workspace_id(task)
    if not ws.exists():
        ws.mkdir(mode=0o700)  # the sandbox chowns it to the task's own uid when it runs
    return ws


def artifact_kind(path: str) -> str:
    p = PurePosixPath(path)
    name = p.name.lower()
    if name.startswith("test_") or name.endswith(("_test.py", ".test.js", ".test.ts", "_test.go")):
        return "test"
    return _KINDS.get(p.suffix.lower(), "code")


class Workspace:
    """A task's directory and the only door the tools have to the file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ---- paths
    def resolve(self, path: str) -> Path:
        """The absolute path of a workspace-relative path; ToolError if it leaves the workspace."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("a path is required (relative to the workspace, e.g. 'app.py')")
        if "\x00" in path:
            raise ToolError(f"invalid path {path!r}: contains a NUL byte")
        p = PurePosixPath(path.strip())
        if p.is_absolute() or path.strip().startswith("~"):
            raise ToolError(f"path {path!r} is absolute: give a path relative to the workspace")
        if ".." in p.parts:
            raise ToolError(f"path {path!r} leaves the workspace ('..' is not allowed)")
        full = (self.root / p).resolve()
        if full != self.root and not full.is_relative_to(self.root):
            raise ToolError(f"path {path!r} leads outside the workspace through a symbolic link")
        return full

    def relative(self, full: Path) -> str:
        return full.relative_to(self.root).as_posix()

    # ---- files (opened without following symlinks, component by component)
    def _open_dir(self, rel_parts: tuple[str, ...], create: bool) -> int:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in rel_parts:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError:
            os.close(fd)
            raise
        return fd

    def _open(self, path: str, flags: int, create_dirs: bool = False) -> int:
        full = self.resolve(path)
        if full == self.root:
            raise ToolError(f"{path!r} is the workspace directory itself, not a file")
        parts = full.relative_to(self.root).parts
        try:
            dfd = self._open_dir(parts[:-1], create_dirs)
        except FileNotFoundError:
            raise ToolError(f"no such directory for {path!r}") from None
        except NotADirectoryError:
            raise ToolError(f"a parent of {path!r} is not a directory") from None
        except OSError as exc:
            raise ToolError(f"cannot open {path!r}: {exc.strerror}") from None
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        except FileNotFoundError:
            raise ToolError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise ToolError(f"{path!r} is a directory, not a file") from None
        except OSError as exc:
            raise ToolError(f"cannot open {path!r}: {exc.strerror}") from None
        finally:
            os.close(dfd)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        fd = self._open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read() if limit is None else f.read(limit)

    def read_text(self, path: str, limit: int | None = None) -> str:
        return self.read_bytes(path, limit).decode("utf-8", errors="replace")

    def write_bytes(self, path: str, data: bytes) -> Path:
        fd = self._open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return self.resolve(path)

    def write_text(self, path: str, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))

    def exists(self, path: str) -> bool:
        try:
            return self.resolve(path).is_file()
        except ToolError:
            return False

    # ---- listing
    def files(self, under: str = "") -> Iterator[str]:
        """Workspace-relative paths of regular files, sorted, caches and scratch dirs skipped."""
        base = self.resolve(under) if under else self.root
        if not base.is_dir():
            raise ToolError(f"no such directory: {under}")
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in filenames:
                full = Path(dirpath) / name
                if full.is_file() and not full.is_symlink():
                    out.append(self.relative(full))
        yield from sorted(out)

    def artifact(self, path: str) -> Artifact:
        data = self.read_bytes(path)
        rel = self.relative(self.resolve(path))
        return Artifact(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest(), kind=artifact_kind(rel))

    def artifacts(self) -> list[Artifact]:
        """Every file of the workspace as an artifact (path, size, sha256, kind)."""
        return [self.artifact(p) for p in self.files()]
