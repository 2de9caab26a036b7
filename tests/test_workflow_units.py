"""Small parts of the workflows: questions on the approval path (wire, CLI answers), the speaker
picked from a selector's answer, and the usage summary's shape."""

from __future__ import annotations

import asyncio

from orchgpt_cli.approvals import Pending, answer_question

from agentd.agents._workflow_text import Tally, pick_speaker
from orchgpt.models import ApprovalDecision, ApprovalRequest, ApprovalResponse, Usage
from orchgpt.wire import codec, dicts
from orchgpt.workflows import Participant


def test_a_question_and_its_answer_cross_the_wire() -> None:
    req = ApprovalRequest("r1", "user_proxy", summary="who?", question="Who speaks next?", choices=["a", "b"])
    assert codec.approval_request_from_pb(codec.approval_request_to_pb(req)) == req
    assert dicts.approval_request_from_dict(dicts.approval_request_to_dict(req)) == req
    resp = ApprovalResponse("r1", ApprovalDecision.APPROVE, answer="b")
    assert codec.approval_response_from_pb(codec.approval_response_to_pb(resp)) == resp


def test_the_cli_takes_a_question_s_answer_as_it_is() -> None:
    q = ApprovalRequest("r1", "user_proxy", question="Your reply?")
    assert answer_question(q, "  n  ").answer == "n"  # not a rejection: the text is the answer
    assert answer_question(q, "").answer == ""  # passing
    pick = ApprovalRequest("r2", "user_proxy", question="Who?", choices=["coder", "reviewer"])
    assert answer_question(pick, "2").answer == "reviewer" and answer_question(pick, "7").answer == "7"

    async def go() -> ApprovalResponse:
        p = Pending(view=None, request=q)  # type: ignore[arg-type]
        return p.answer("n")

    r = asyncio.run(go())
    assert (r.decision, r.answer) == (ApprovalDecision.APPROVE, "n")


def test_the_speaker_is_read_from_the_selector_s_answer() -> None:
    ps = [
        Participant(name="coder"),
        Participant(name="reviewer"),
        Participant(name="code-tester", type="echo"),
    ]
    assert pick_speaker("reviewer", ps) == ps[1]
    assert pick_speaker("**Coder**", ps) == ps[0]
    assert pick_speaker("Next: code-tester, then coder", ps) == ps[2]
    assert pick_speaker("nobody", ps) is None


def test_the_usage_summary_has_the_shape_per_agent_and_model() -> None:
    t = Tally()
    t.add("coder", Usage(10, 5, 0.01, "gpt-4o-mini", 1))
    t.add("coder", Usage(1, 1, 0.001, "gpt-4o", 1))
    t.add("reviewer", Usage(3, 2, 0.002, "gpt-4o-mini", 1))
    t.add("echo", Usage())
    s = t.summary(1_000, 3_500)
    assert s["start_time"] == "1970-01-01T00:00:01.000Z" and s["end_time"] == "1970-01-01T00:00:03.500Z"
    assert s["total"] == {
        "total_cost": 0.013,
        "gpt-4o": {"cost": 0.001, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "gpt-4o-mini": {
            "cost": 0.012,
            "prompt_tokens": 13,
            "completion_tokens": 7,
            "total_tokens": 20,
        },
    }
    assert s["agents"]["coder"]["total_cost"] == 0.011 and set(s["agents"]["coder"]) == {
        "total_cost",
        "gpt-4o",
        "gpt-4o-mini",
    }
    assert s["agents"]["echo"] == {"total_cost": 0.0}
