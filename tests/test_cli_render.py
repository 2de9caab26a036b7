"""How autogpt shows task events: lines marked with their task, streamed tokens, JSON objects, tables."""

from __future__ import annotations

import io
import json

import pytest
from orchgpt_cli.output import StreamOutput
from orchgpt_cli.render import TOKEN_WRAP, EventRenderer, TaskLabel, event_json, plain, table

from orchgpt.models import (
    ApprovalRequest,
    Artifact,
    EventKind,
    TaskEvent,
    TaskResult,
    TaskState,
    Usage,
)

TID = "3f2a9c1b00000000000000000000aaaa"
JSON_KEYS = {
    "type",
    "kind",
    "task_id",
    "seq",
    "state",
    "text",
    "agent_type",
    "agent_id",
    "parent_task_id",
    "ts_ms",
    "data",
    "artifact",
    "approval",
    "result",
}


def lines_of(r: EventRenderer, *events: TaskEvent) -> list[str]:
    out: list[str] = []
    for ev in events:
        out += [plain(x) for x in r.feed(ev)]
    return out + [plain(x) for x in r.flush()]


def test_every_line_is_marked_with_its_task() -> None:
    r = EventRenderer(TaskLabel(TID, "echo"))
    got = lines_of(
        r,
        TaskEvent(TID, EventKind.STATUS, 1, TaskState.QUEUED, "queued for echo"),
        TaskEvent(TID, EventKind.STATUS, 2, TaskState.RUNNING, "on agent a1"),
        TaskEvent(TID, EventKind.LOG, 3, text="line one\nline two"),
        TaskEvent(TID, EventKind.STEP, 4, text="plan"),
        TaskEvent(TID, EventKind.ARTIFACT, 5, artifact=Artifact("docs/a.md", 2048, "x", "document")),
        TaskEvent(TID, EventKind.APPROVAL, 6, approval=ApprovalRequest("r1", "write_file", "{}", "write a.md")),
    )
    assert got == [
        "[echo 3f2a9c1b] queued for echo",
        "[echo 3f2a9c1b] running: on agent a1",
        "[echo 3f2a9c1b] line one",
        "[echo 3f2a9c1b] line two",
        "[echo 3f2a9c1b] step: plan",
        "[echo 3f2a9c1b] artifact: docs/a.md (2.0 KB, document)",
        "[echo 3f2a9c1b] approval needed: write_file: write a.md",
    ]


def test_streamed_tokens_become_lines_and_the_output_is_not_repeated() -> None:
    r = EventRenderer(TaskLabel(TID, "echo"), prefix_output=False)
    toks = [TaskEvent(TID, EventKind.TOKEN, i, text=t) for i, t in enumerate(["hel", "lo ", "world\nsec", "ond"], 1)]
    first = [plain(x) for ev in toks for x in r.feed(ev)]
    assert first == ["[echo 3f2a9c1b] hello world"]  # the partial line waits
    result = TaskResult(
        TID,
        TaskState.SUCCEEDED,
        output="hello world\nsecond",
        usage=Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.0012),
    )
    rest = [plain(x) for x in r.feed(TaskEvent(TID, EventKind.RESULT, 9, result=result))]
    assert rest[0] == "[echo 3f2a9c1b] second"
    assert len(rest) == 2 and rest[1].startswith("[echo 3f2a9c1b] succeeded (")
    assert "15 tokens, $0.0012" in rest[1]


def test_long_token_streams_wrap_at_a_space() -> None:
    r = EventRenderer(TaskLabel(TID, "echo"))
    words = [f"word{i:03d} " for i in range(40)]
    out = [plain(x) for w in words for x in r.feed(TaskEvent(TID, EventKind.TOKEN, text=w))]
    out += [plain(x) for x in r.flush()]
    texts = [o.removeprefix("[echo 3f2a9c1b] ") for o in out]
    assert all(len(t) <= TOKEN_WRAP for t in texts) and len(texts) > 1
    assert " ".join(texts).split() == [w.strip() for w in words]


def test_failed_result_says_why_and_output_is_printed_verbatim_in_one_shot() -> None:
    r = EventRenderer(TaskLabel(TID, "echo"), prefix_output=False, fancy=False)
    res = TaskResult(TID, TaskState.FAILED, output="partial", error="boom", artifacts=[Artifact("a")])
    got = [plain(x) for x in r.feed(TaskEvent(TID, EventKind.RESULT, 3, result=res))]
    assert got[0] == "partial"
    assert got[1].startswith("[echo 3f2a9c1b] failed: boom (") and got[1].endswith(", 1 artifact)")
    fancy = EventRenderer(TaskLabel(TID, "echo"), fancy=True)
    got = [plain(x) for x in fancy.feed(TaskEvent(TID, EventKind.RESULT, 3, result=res))]
    assert got[0] == "[echo 3f2a9c1b] partial" and "✗ failed: boom" in got[1]


def test_json_events_have_every_documented_key() -> None:
    ev = TaskEvent(
        TID,
        EventKind.RESULT,
        7,
        TaskState.SUCCEEDED,
        "done",
        agent_id="a1",
        result=TaskResult(
            TID, TaskState.SUCCEEDED, output="hi", artifacts=[Artifact("x.py", 3)], usage=Usage(1, 2, 0.5, "m", 1)
        ),
    )
    d = event_json(ev, "echo")
    assert set(d) == JSON_KEYS
    assert (d["type"], d["kind"], d["state"], d["seq"], d["agent_type"]) == ("event", "result", "succeeded", 7, "echo")
    assert d["result"]["state"] == "succeeded" and d["result"]["output"] == "hi"
    assert d["result"]["usage"]["total_tokens"] == 3 and d["result"]["artifacts"][0]["path"] == "x.py"
    assert d["artifact"] is None and d["approval"] is None
    tok = event_json(TaskEvent(TID, EventKind.TOKEN, 2, text="x"))
    assert tok["state"] is None and tok["result"] is None and set(tok) == JSON_KEYS


def test_stream_output_json_mode_keeps_stdout_pure_json() -> None:
    out, err = io.StringIO(), io.StringIO()
    o = StreamOutput(out, err, json_mode=True)
    r = EventRenderer(TaskLabel(TID, "echo"))
    o.event(r, TaskEvent(TID, EventKind.LOG, 1, text="hello"))
    o.record("agents", {"agents": []}, [[("", "a table")]])
    o.info("a note")
    o.error("a problem")
    objs = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["type"] for x in objs] == ["event", "agents"]
    assert err.getvalue().splitlines() == ["a note", "autogpt: a problem"]


def test_table_pads_columns_and_cuts_the_last() -> None:
    lines = [plain(x) for x in table(["A", "LONGER", "LAST"], [["x", "y", "z" * 50], ["xx", "", "w"]], width=30)]
    assert lines[0] == "A   LONGER  LAST"
    assert lines[1].startswith("x   y       zzz") and lines[1].endswith("...") and len(lines[1]) == 30
    assert lines[2] == "xx          w"


def test_colours_only_on_a_terminal_and_never_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    line = [("state.ok", "succeeded"), ("", " plain")]
    tty = Tty()
    StreamOutput(tty, io.StringIO()).lines([line])
    assert tty.getvalue() == "\x1b[32;1msucceeded\x1b[0m plain\n"
    piped = io.StringIO()
    StreamOutput(piped, io.StringIO()).lines([line])
    assert piped.getvalue() == "succeeded plain\n"
    assert not StreamOutput(Tty(), io.StringIO(), json_mode=True).colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert not StreamOutput(Tty(), io.StringIO()).colour


def test_a_results_checks_are_shown_as_a_table() -> None:
    from orchgpt.checks import Check, dumps

    checks = [
        Check("tests", "pytest", "passed", "1 passed in 0.01s"),
        Check("mutation", "agentd mutation", "failed", "score 0/3 (0%): the tests are vacuous"),
        Check("ruff", "ruff", "failed", "1 problem(s)", required=False),
        Check("browser", "chromium", "skipped", "chromium is not installed"),
    ]
    res = TaskResult(TID, TaskState.FAILED, output="", error="mutation check failed", data={"checks": dumps(checks)})
    got = [
        plain(x) for x in EventRenderer(TaskLabel(TID, "backend")).feed(TaskEvent(TID, EventKind.RESULT, 3, result=res))
    ]
    assert got[:5] == [
        "[backend 3f2a9c1b] CHECK     TOOL             OUTCOME            DETAIL",
        "[backend 3f2a9c1b] tests     pytest           passed             1 passed in 0.01s",
        "[backend 3f2a9c1b] mutation  agentd mutation  failed             score 0/3 (0%): the tests are vacuous",
        "[backend 3f2a9c1b] ruff      ruff             failed (advisory)  1 problem(s)",
        "[backend 3f2a9c1b] browser   chromium         skipped            chromium is not installed",
    ]
    assert got[5].startswith("[backend 3f2a9c1b] failed: mutation check failed (")
    # Free-text "checks" of other agents, or none: no table.
    for data in ({"checks": "design spec complete"}, {}):
        plain_res = TaskResult(TID, TaskState.SUCCEEDED, output="ok", data=data)
        lines = [
            plain(x)
            for x in EventRenderer(TaskLabel(TID, "designer"), prefix_output=False).feed(
                TaskEvent(TID, EventKind.RESULT, 4, result=plain_res)
            )
        ]
        assert len(lines) == 2 and lines[0] == "ok"


@pytest.mark.parametrize("agent_id, text", [("local-wrong-0abc", "running"), ("worker-7", "queued for nobody")])
def test_a_sub_task_is_labelled_with_the_agent_type_on_the_wire(agent_id: str, text: str) -> None:
    """orchgpt stamps TaskEvent.agent_type: the CLI uses it, not the agent id or the text."""
    from orchgpt_cli.context import Context
    from orchgpt_cli.runner import handle, new_view

    from orchgpt import codec
    from orchgpt.iac.v1 import iac_pb2 as pb

    out = io.StringIO()
    ctx = Context(StreamOutput(stdout=out, stderr=io.StringIO()))
    parent = new_view(ctx, "p1", "lead")
    handle(ctx, parent, codec.event_from_pb(pb.TaskEvent(task_id="p1", seq=1, log=pb.LogEvent(text="go")), 1))
    child = pb.TaskEvent(
        task_id="c1",
        seq=1,
        agent_id=agent_id,
        parent_task_id="p1",
        agent_type="helper",
        status=pb.StatusEvent(state=pb.RUNNING, text=text),
    )
    handle(ctx, parent, codec.event_from_pb(child, 1))
    assert parent.children["c1"].agent_type == "helper"
    assert "[helper c1]" in out.getvalue()
