"""Blocks: every registered block passes its self-test; a broken one fails `orchgpt blocks
test` naming block and pin; run-time validation names block, pin and problem; discovery from
entry points; the calculator never evaluates code; HTTP is off unless allowed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentd.blocks import BlockContext, BlockError, collect, get, load
from agentd.blocks.library.calculator import CalcError, evaluate
from agentd.blocks.selftest import self_test

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]

BROKEN = """
from typing import Any
from pydantic import BaseModel
from agentd.blocks import Block, BlockContext, BlockOutput

class Broken(Block):
    id = "test.broken"
    name = "Broken"
    description = "upper-cases, but its test_output is wrong"

    class Input(BaseModel):
        text: str

    class Output(BaseModel):
        text: str

    test_input = {"text": "hi"}
    test_output = [("text", "hi")]

    async def run(self, input: Any, ctx: BlockContext) -> BlockOutput:
        yield "text", input.text.upper()
"""


@pytest.mark.parametrize("block_id", sorted(load()))
def test_every_registered_block_passes_its_self_test(block_id: str) -> None:
    assert asyncio.run(self_test(get(block_id))) == []


def _orchgpt(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(path or ""), str(ROOT)) if p),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchgpt", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def test_blocks_test_cli_passes_then_fails_on_a_broken_block(tmp_path: Path) -> None:
    ok = _orchgpt("blocks", "test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   text.match" in ok.stdout and "self-tests passed" in ok.stdout
    passed = {ln.split()[1] for ln in ok.stdout.splitlines() if ln.startswith("ok ")}
    assert passed == set(load()) and {"agent", "workflow"} <= passed, ok.stdout
    (tmp_path / "broken_blocks.py").write_text(BROKEN)
    bad = _orchgpt("blocks", "test", "--module", "broken_blocks", path=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL test.broken" in bad.stdout
    assert "block test.broken: pin 'text': expected 'hi', got 'HI'" in bad.stdout


def test_blocks_are_discovered_from_entry_points(tmp_path: Path) -> None:
    (tmp_path / "shipped_blocks.py").write_text(
        BROKEN.replace("test.broken", "shipped.upper").replace('("text", "hi")]', '("text", "HI")]')
    )
    dist = tmp_path / "shipped_blocks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shipped-blocks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[orchgpt.blocks]\nmine = shipped_blocks\n")
    out = _orchgpt("blocks", "test", "shipped.upper", path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok   shipped.upper" in out.stdout
    listed = _orchgpt("blocks", "list", "--json", path=tmp_path)
    assert '"id": "shipped.upper"' in listed.stdout and '"input_schema"' in listed.stdout


def _run(block_id: str, data: object, ctx: BlockContext | None = None) -> list[tuple[str, object]]:
    return asyncio.run(collect(get(block_id)(), data, ctx or BlockContext()))


def test_input_validation_names_block_pin_and_problem() -> None:
    with pytest.raises(BlockError) as e:
        _run("calculator", {"variables": {"a": 1}})
    assert str(e.value) == "block calculator: pin 'expression': input: Field required"
    with pytest.raises(BlockError) as e:
        _run("list.get", {"items": [1], "index": "first"})
    assert e.value.block_id == "list.get" and e.value.pin == "index" and "integer" in e.value.problem


def test_output_validation_and_error_pin() -> None:
    from agentd.blocks.base import validate_output

    with pytest.raises(BlockError) as e:
        validate_output(get("csv.read"), "count", "many")
    assert "block csv.read: pin 'count': output:" in str(e.value)
    with pytest.raises(BlockError) as e:
        validate_output(get("csv.read"), "nope", 1)
    assert "not an output of this block" in str(e.value)
    with pytest.raises(BlockError) as e:  # an output named error fails the node
        _run("list.get", {"items": [], "index": 3})
    assert e.value.pin == "error" and "out of range" in e.value.problem


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "().__class__",
        "open('x')",
        "[1, 2]",
        "a if 1 else 2",
        "9 ** 9 ** 9",
        "lambda: 1",
        "((10 ** 300) ** 300) ** 300",
        "1e308 * 10",
        "a.real",
        "True + 1",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expr: str) -> None:
    with pytest.raises(CalcError):
        evaluate(expr)
    assert evaluate("2 * (3 + 4) - 10 / 4") == 11.5


def test_http_block_is_off_unless_allowed() -> None:
    with pytest.raises(BlockError) as e:
        _run("http.request", {"url": "http://127.0.0.1:9/"})
    assert "disabled" in e.value.problem and "ORCHGPT_BLOCKS_ALLOW_HTTP" in e.value.problem


def test_loop_and_condition_yield_per_item_and_branch() -> None:
    assert _run("loop.items", {"items": {"x": 1, "y": 2}}) == [
        ("item", 1),
        ("key", "x"),
        ("item", 2),
        ("key", "y"),
    ]
    assert _run("condition", {"value1": 1, "operator": "==", "value2": 2}) == [
        ("result", False),
        ("no_output", 1),
    ]
    assert _run("text.template", {"template": "{{a.0}}-{{b}}", "values": {"a": [7], "b": "z"}}) == [("text", "7-z")]
    with pytest.raises(BlockError, match="no value for missing"):
        _run("text.template", {"template": "{{missing}}"})


def test_broken_module_text_is_valid_python() -> None:
    compile(textwrap.dedent(BROKEN), "broken_blocks.py", "exec")


def test_http_block_when_allowed_talks_to_a_real_server() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps({"got": json.loads(body), "path": self.path}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/api"
        got = _run(
            "http.request",
            {"url": url, "method": "POST", "body": {"a": 1}},
            BlockContext(allow_http=True),
        )
    finally:
        srv.shutdown()
    assert got[0] == ("status", 201)
    assert got[2] == ("data", {"got": {"a": 1}, "path": "/api"})
