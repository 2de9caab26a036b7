"""Create (once) the virtualenv AutoGen runs in: bench/.venv-autogen."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
VENV = HERE.parent / ".venv-autogen"
STAMP = ".bench-requirements.sha256"


class VenvError(Exception):
    """The AutoGen virtualenv cannot be created or installed."""


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_ready(venv: Path = VENV) -> bool:
    stamp = venv / STAMP
    return venv_python(venv).exists() and stamp.exists() and stamp.read_text().strip() == _digest()


def ensure_venv(venv: Path = VENV, timeout: float = 600.0) -> Path:
    """Return the venv's python, creating the venv and installing requirements.txt when needed."""
    if is_ready(venv):
        return venv_python(venv)

    def run(cmd: list[str], what: str, left: float) -> None:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=left, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise VenvError(f"{what} took more than {left:.0f}s") from None
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-10:])
            raise VenvError(f"{what} failed (exit {r.returncode}):\n{tail}")

    if not venv_python(venv).exists():
        run([sys.executable, "-m", "venv", str(venv)], f"creating {venv}", 120)
    run(
        [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(REQUIREMENTS)],
        f"installing {REQUIREMENTS.name} into {venv}",
        timeout,
    )
    (venv / STAMP).write_text(_digest() + "\n")
    return venv_python(venv)


if __name__ == "__main__":
    print(ensure_venv())
