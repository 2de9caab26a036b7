"""The designer: a checked design spec and SVG mock-ups; the images API when the provider has one."""

from __future__ import annotations

import asyncio
import base64
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.agents.designer import DesignerAgent, check_design, check_svg, palette
from agentd.runtime import Outcome, TaskContext
from agentd.settings import AgentSettings
from orchgpt.checks import checks_of
from orchgpt.models import EventKind, Task, TaskEvent
from tests.support.scripted_openai import ScriptedOpenAI, prompt_text, text, tool_call, tool_calls
from tests.support.team_script import ARCHITECTURE, DESIGN, MOCKUP

pytestmark = pytest.mark.timeout(60)


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x1f\x6f\xeb"))
        + chunk(b"IEND", b"")
    )


def test_design_and_svg_checks() -> None:
    assert check_design(DESIGN) == [] and palette(DESIGN) == ["#1F6FEB", "#0D1117", "#F6F8FA", "#D1242F"]
    no_type = DESIGN.split("## Typography")[0] + "## Layout" + DESIGN.split("## Layout")[1]
    assert check_design(no_type) == ["DESIGN.md has no '## Typography' section"]
    grey = DESIGN.replace("`#1F6FEB`", "blue").replace("`#0D1117`", "black")
    assert check_design(grey) == ["the palette of DESIGN.md must list at least 3 colours as hex codes (e.g. #1F6FEB)"]
    assert check_svg("m.svg", MOCKUP) == []
    assert "needs xmlns" in check_svg("m.svg", MOCKUP.replace(' xmlns="http://www.w3.org/2000/svg"', ""))[0]
    assert "not well-formed XML" in check_svg("m.svg", MOCKUP.replace("</svg>", ""))[0]
    assert "DOCTYPE/ENTITY" in check_svg("m.svg", '<!DOCTYPE svg [<!ENTITY a "b">]>' + MOCKUP)[0]
    assert "root element is <html>" in check_svg("m.svg", "<html><body/></html>")[0]
    assert any("<script>" in p for p in check_svg("m.svg", MOCKUP.replace("</svg>", "<script>x()</script></svg>")))
    assert "viewBox" in check_svg("m.svg", '<svg xmlns="http://www.w3.org/2000/svg"><rect/><rect/><rect/></svg>')[0]


@pytest.fixture
def srv() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as s:
        yield s


def run(srv: ScriptedOpenAI, tmp_path: Path, options: dict[str, str] | None = None) -> tuple[Outcome, list[TaskEvent]]:
    project = tmp_path / "ws" / "proj"
    project.mkdir(parents=True, exist_ok=True)
    (project / "ARCHITECTURE.md").write_text(ARCHITECTURE)
    settings = AgentSettings.for_endpoint(srv.base_url, api_key="sk-scripted", workspace_root=tmp_path / "ws")
    events: list[TaskEvent] = []
    ctx = TaskContext(
        Task(task_id="d1", agent_type="designer", input="todo app", options={"workspace": "proj", **(options or {})}),
        project,
        "designer-1",
        events.append,
        settings=settings,
    )
    return asyncio.run(asyncio.wait_for(DesignerAgent(settings).run(ctx), 50)), events


def test_problems_go_back_until_the_design_passes(srv: ScriptedOpenAI, tmp_path: Path) -> None:
    bad_svg = MOCKUP.replace(' xmlns="http://www.w3.org/2000/svg"', "")
    no_type = DESIGN.split("## Typography")[0] + "## Layout" + DESIGN.split("## Layout")[1]
    srv.push(
        tool_calls(
            ("write_file", {"path": "DESIGN.md", "content": no_type}),
            ("write_file", {"path": "mockups/main.svg", "content": bad_svg}),
        ),
        text("Done."),
        tool_calls(
            ("write_file", {"path": "DESIGN.md", "content": DESIGN}),
            ("write_file", {"path": "mockups/main.svg", "content": MOCKUP}),
        ),
        text("Fixed."),
    )
    out, events = run(srv, tmp_path)
    assert out.ok, out.error
    assert "| GET | /todos |" in prompt_text(srv.chat_requests[0])  # the architect's document is in the brief
    feedback = srv.chat_requests[2]["messages"][-1]["content"]
    assert "no '## Typography' section" in feedback and 'needs xmlns="http://www.w3.org/2000/svg"' in feedback
    assert out.output == "wrote DESIGN.md (4 colours) and 1 SVG mock-up(s): mockups/main.svg"
    assert out.data["palette"] == "#1F6FEB, #0D1117, #F6F8FA, #D1242F"
    previews = {"mockups/main.png"} if shutil.which("rsvg-convert") else set()
    assert {e.artifact.path for e in events if e.kind == EventKind.ARTIFACT and e.artifact} == {
        "DESIGN.md",
        "mockups/main.svg",
        *previews,
    }
    assert {c.name: c.outcome for c in checks_of(out)} == {
        "design": "passed",
        "contrast": "passed",
        "render": "passed" if previews else "skipped",
    }
    assert "images_note" not in out.data  # not asked for


def test_files_from_a_plain_answer(srv: ScriptedOpenAI, tmp_path: Path) -> None:
    srv.push(text(f"Here you go.\n\n```markdown\n{DESIGN}```\n\n```svg\n{MOCKUP}```\n"))
    out, _ = run(srv, tmp_path)
    assert out.ok, out.error
    assert (tmp_path / "ws" / "proj" / "mockups" / "screen1.svg").read_text() == MOCKUP


def test_gives_up_after_its_tries(srv: ScriptedOpenAI, tmp_path: Path) -> None:
    srv.push(
        tool_call("write_file", {"path": "DESIGN.md", "content": DESIGN}),
        text("no mock-ups, sorry"),
        text("still none"),
    )
    out, _ = run(srv, tmp_path, {"tries": "2"})
    assert not out.ok and "incomplete after 2 round(s)" in out.error and "no SVG mock-up under mockups/" in out.error


def test_images_api_missing_is_skipped(srv: ScriptedOpenAI, tmp_path: Path) -> None:
    srv.push(
        tool_calls(
            ("write_file", {"path": "DESIGN.md", "content": DESIGN}),
            ("write_file", {"path": "mockups/main.svg", "content": MOCKUP}),
        ),
        text("Done."),
    )
    out, events = run(srv, tmp_path, {"images": "true"})
    assert out.ok
    assert out.data["images_note"] == "the provider offers no images API (HTTP 404); skipped"
    assert any(e.kind == EventKind.LOG and "no images API" in e.text for e in events)
    assert srv.recorded("/images/generations")  # it did ask


def test_images_api_when_the_provider_has_one(srv: ScriptedOpenAI, tmp_path: Path) -> None:
    png = png_1x1()
    base: Any = srv._httpd.RequestHandlerClass

    class WithImages(base):  # type: ignore[misc,valid-type]
        def do_POST(self) -> None:
            if self.path.rstrip("/") == "/v1/images/generations":
                self._record(self._read_json())
                self._json(200, {"created": 0, "data": [{"b64_json": base64.b64encode(png).decode()}]})
            else:
                super().do_POST()

    srv._httpd.RequestHandlerClass = WithImages
    srv.push(
        tool_calls(
            ("write_file", {"path": "DESIGN.md", "content": DESIGN}),
            ("write_file", {"path": "mockups/main.svg", "content": MOCKUP}),
        ),
        text("Done."),
    )
    out, events = run(srv, tmp_path, {"images": "true", "image_size": "256x256"})
    assert out.ok and out.data["images"] == "images/hero.png"
    assert (tmp_path / "ws" / "proj" / "images" / "hero.png").read_bytes() == png
    [req] = srv.recorded("/images/generations")
    assert req.body["size"] == "256x256" and "todo app" in req.body["prompt"]
    assert req.headers["authorization"] == "Bearer sk-scripted"
    assert "images/hero.png" in {e.artifact.path for e in events if e.kind == EventKind.ARTIFACT and e.artifact}
