"""Pin addresses: ``name``, or a part of its value: ``name.key``, ``name.0`` (a list index),
``name.key.0``... Links read a part of a source's output and may set a part of a sink's input."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ErrorCode, OrchgptError

_PIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$")


class PinError(OrchgptError, ValueError):
    """A pin address that is malformed or names a part a value does not have."""

    code = ErrorCode.INVALID_ARGUMENT


def split(address: str) -> tuple[str, list[str]]:
    """(the pin's name, the path into its value)."""
    if not _PIN.match(address):
        raise PinError(f"{address!r} is not a pin (a name, then .key or .INDEX parts)")
    name, *path = address.split(".")
    return name, path


def get_part(value: Any, path: list[str]) -> Any:
    """The part of ``value`` at ``path``; PinError names the missing step."""
    cur = value
    for step in path:
        if isinstance(cur, dict) and step in cur:
            cur = cur[step]
        elif isinstance(cur, list) and step.lstrip("-").isdigit() and -len(cur) <= int(step) < len(cur):
            cur = cur[int(step)]
        else:
            raise PinError(f"no {step!r} in a {type(cur).__name__}")
    return cur


def set_part(inputs: dict[str, Any], address: str, value: Any) -> None:
    """Set the input pin (or the part of it) at ``address`` in ``inputs``."""
    name, path = split(address)
    if not path:
        inputs[name] = value
        return
    cur = inputs.setdefault(name, {})
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(cur, list) and step.lstrip("-").isdigit():
            idx = int(step)
            while len(cur) <= idx:
                cur.append(None)
            if last:
                cur[idx] = value
            else:
                cur[idx] = cur[idx] if isinstance(cur[idx], dict | list) else {}
                cur = cur[idx]
        elif isinstance(cur, dict):
            if last:
                cur[step] = value
            else:
                cur = cur.setdefault(step, {})
        else:
            raise PinError(f"cannot set {address!r}: {step!r} is inside a {type(cur).__name__}")
