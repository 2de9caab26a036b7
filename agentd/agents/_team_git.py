"""Git plumbing for the git agent (and the manager's report commit): local only, no hooks.

Every command runs with a fixed configuration: no system or global config,
hooks disabled (``core.hooksPath=/dev/null``), no fsmonitor, no signing, no
remote protocol allowed, and the repository's own ``.git/config`` rewritten to
a known minimal content before use. Generated code runs in the sandbox with
write access to the workspace, ``.git`` included; without this, a hook or a
filter driver it planted would run here, outside the sandbox.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TaskFailed

GIT_TIMEOUT_S = 30.0
IGNORE = """# written by orchgpt's git agent
__pycache__/
*.pyc
.pytest_cache/
.mypy_cache/
.ruff_cache/
.tmp/
.orchgpt/
node_modules/
.venv/
"""
_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
"""


@dataclass
class Commit:
    sha: str
    author: str
    message: str
    files: list[str] = field(default_factory=list)


class Git:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _env(self, author: str = "orchgpt git", email: str = "git@orchgpt.local") -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": "orchgpt git",
            "GIT_COMMITTER_EMAIL": "git@orchgpt.local",
        }

    async def run(
        self, *args: str, author: str = "orchgpt git", email: str = "git@orchgpt.local", check: bool = True
    ) -> tuple[int, str]:
        argv = [
            "git",
            "-C",
            str(self.root),
            "-c",
            f"safe.directory={self.root}",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "protocol.allow=never",
            "-c",
            "init.defaultBranch=main",
            *args,
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self._env(author, email),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except FileNotFoundError:
            raise TaskFailed("git is not installed on this agent") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TaskFailed(f"git {args[0]} took longer than {GIT_TIMEOUT_S:g}s") from None
        text = out.decode("utf-8", errors="replace").strip()
        if check and proc.returncode != 0:
            raise TaskFailed(f"git {' '.join(args[:2])} failed (exit code {proc.returncode}): {text[-500:]}")
        return proc.returncode or 0, text

    @property
    def exists(self) -> bool:
        return (self.root / ".git").is_dir()

    async def ensure(self) -> bool:
        """Initialise the repository when there is none; True when it was created."""
        created = False
        dotgit = self.root / ".git"
        if dotgit.is_symlink() or (dotgit.exists() and not dotgit.is_dir()):
            raise TaskFailed(".git in the workspace is not a directory; refusing to use it")
        if not dotgit.exists():
            await self.run("init", "-q", "-b", "main")
            created = True
        (dotgit / "config").write_text(_CONFIG)  # drop whatever was planted there
        hooks = dotgit / "hooks"
        if hooks.is_dir() and not hooks.is_symlink():
            for h in hooks.iterdir():
                if h.is_file() and not h.name.endswith(".sample"):
                    h.unlink()
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text(IGNORE)
        return created

    async def head(self) -> str:
        code, out = await self.run("rev-parse", "--verify", "-q", "HEAD", check=False)
        return out if code == 0 else ""

    async def commit(self, paths: list[str] | None, message: str, author: str, email: str) -> Commit | None:
        """Stage paths (everything when None) and commit; None when nothing changed."""
        if paths is None:
            await self.run("add", "-A", "--", ".")
        else:
            existing = [p for p in paths if (self.root / p).exists()]
            gone = [p for p in paths if not (self.root / p).exists()]
            if existing:
                await self.run("add", "-f", "--", *existing)
            for p in gone:  # removed since: record the removal if it was tracked
                await self.run("rm", "-q", "--cached", "--ignore-unmatch", "--", p)
        code, _ = await self.run("diff", "--cached", "--quiet", check=False)
        if code == 0:
            return None
        _, names = await self.run("diff", "--cached", "--name-only")
        await self.run("commit", "-q", "--no-verify", "-m", message, author=author, email=email)
        sha = await self.head()
        return Commit(sha, f"{author} <{email}>", message.splitlines()[0], names.splitlines())

    async def log(self, limit: int = 50) -> list[tuple[str, str, str]]:
        """(sha, author name, subject) of the latest commits, newest first."""
        code, out = await self.run("log", f"-n{limit}", "--format=%H%x09%an%x09%s", check=False)
        if code != 0:
            return []
        rows = []
        for line in out.splitlines():
            sha, _, rest = line.partition("\t")
            name, _, subject = rest.partition("\t")
            rows.append((sha, name, subject))
        return rows
