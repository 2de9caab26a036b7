"""Issue 18, designer: colour contrast is computed (WCAG 2), not claimed, and each mock-up is
rendered to a PNG by a real renderer; a low-contrast design goes back to the model."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agentd.agents.designer import DesignerAgent
from agentd.checks.design import (
    contrast,
    contrast_check,
    palette_pairs,
    parse_colour,
    render_check,
    svg_pairs,
)
from agentd.runtime import Task, TaskContext
from agentd.settings import AgentSettings
from orchgpt.checks import checks_of
from tests.support.scripted_openai import ScriptedOpenAI, text, tool_calls
from tests.support.team_script import DESIGN, MOCKUP

pytestmark = pytest.mark.timeout(60)
needs_rsvg = pytest.mark.skipif(
    shutil.which("rsvg-convert") is None,
    reason="rsvg-convert (Debian librsvg2-bin) is not installed",
)


def rgb(h: str) -> tuple[int, int, int]:
    c = parse_colour(h)
    assert c is not None
    return c


def test_the_wcag_formula() -> None:
    assert contrast(rgb("#000"), rgb("#FFFFFF")) == pytest.approx(21.0)
    assert contrast(rgb("#777777"), rgb("#FFFFFF")) == pytest.approx(4.48, abs=0.01)  # just fails AA
    assert contrast(rgb("#767676"), rgb("#FFFFFF")) == pytest.approx(4.54, abs=0.01)  # just passes
    assert contrast(rgb("#1F6FEB"), rgb("#fff")) == contrast(rgb("#FFFFFF"), rgb("#1f6feb"))
    assert parse_colour("white") == (255, 255, 255) and parse_colour("url(#g)") is None


def test_palette_pairs_follow_the_named_roles() -> None:
    pairs, note = palette_pairs(["- `#0D1117` text", "- `#F6F8FA` background", "- `#1F6FEB` primary"])
    assert note == "" and [(p.fg, p.bg) for p in pairs] == [(rgb("#0D1117"), rgb("#F6F8FA"))]
    grey = ["- `#AAAAAA` body text", "- `#FFFFFF` page background"]
    check, problems = contrast_check(grey, {})
    assert check.outcome == "failed" and "#AAAAAA on #FFFFFF is 2.32:1" in check.detail
    assert problems and "WCAG AA needs 4.5:1" in problems[0]
    unnamed, _ = palette_pairs(["`#111111` ink-ish", "`#EEEEEE`", "`#888888`"])
    assert len(unnamed) == 1 and "best pair" in unnamed[0].where


def test_mockup_text_is_judged_against_what_is_under_it() -> None:
    pairs = {p.where: round(p.ratio, 1) for p in svg_pairs("m.svg", MOCKUP)}
    assert pairs == {"m.svg text 'Todos'": 17.8, "m.svg text 'Add'": 4.6}
    pale = MOCKUP.replace('<text x="540" y="98" fill="#FFFFFF">', '<text x="540" y="98" fill="#8AB4F8">')
    check, _ = contrast_check([], {"m.svg": pale})
    assert check.outcome == "failed" and "m.svg text 'Add': #8AB4F8 on #1F6FEB" in check.detail


@needs_rsvg
def test_render_makes_real_pngs_and_names_a_broken_svg(tmp_path: Path) -> None:
    (tmp_path / "mockups").mkdir()
    (tmp_path / "mockups" / "main.svg").write_text(MOCKUP)
    check, made = render_check(tmp_path, ["mockups/main.svg"])
    assert check.outcome == "passed" and made == ["mockups/main.png"]
    png = (tmp_path / "mockups" / "main.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 640  # IHDR width
    (tmp_path / "mockups" / "bad.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><rect")
    check, _ = render_check(tmp_path, ["mockups/bad.svg"])
    assert check.outcome == "failed" and "mockups/bad.svg" in check.detail


def test_a_low_contrast_design_goes_back_to_the_model(tmp_path: Path) -> None:
    pale_doc = DESIGN.replace("`#0D1117` text", "`#C9D1D9` text")
    with ScriptedOpenAI() as srv:
        srv.push(
            tool_calls(
                ("write_file", {"path": "DESIGN.md", "content": pale_doc}),
                ("write_file", {"path": "mockups/main.svg", "content": MOCKUP}),
            ),
            text("Done."),
            tool_calls(("write_file", {"path": "DESIGN.md", "content": DESIGN})),
            text("Fixed."),
        )
        project = tmp_path / "ws" / "p"
        project.mkdir(parents=True)
        settings = AgentSettings.for_endpoint(srv.base_url, api_key="k", workspace_root=tmp_path / "ws")
        ctx = TaskContext(
            Task(task_id="d1", agent_type="designer", input="todo app", options={"workspace": "p"}),
            project,
            "designer-1",
            lambda e: None,
            settings=settings,
        )
        out = asyncio.run(asyncio.wait_for(DesignerAgent(settings).run(ctx), 50))
        feedback = srv.chat_requests[2]["messages"][-1]["content"]
    assert "contrast too low" in feedback and "#C9D1D9 on #F6F8FA" in feedback
    assert out.ok, out.error
    assert {c.name: c.outcome for c in checks_of(out)}["contrast"] == "passed"
