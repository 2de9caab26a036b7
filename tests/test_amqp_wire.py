"""The AMQP bridge's wire format, without a broker: decoding, task ids, answers, masked URLs."""

from __future__ import annotations

import json

import pytest

from orchgpt.bridge import amqp_wire as wire
from orchgpt.models import Action, TaskResult, TaskState


def parse(body: str | bytes, **kw: object) -> wire.Inbound:
    data = body.encode() if isinstance(body, str) else body
    return wire.parse_inbound(data, default_agent=kw.pop("default_agent", "echo"), **kw)  # type: ignore[arg-type]


def test_a_plain_string_is_a_task_for_the_default_agent_in_the_reply_queues_conversation() -> None:
    m = parse("hello")
    assert (m.kind, m.content, m.agent_type, m.action, m.is_json) == ("task", "hello", "echo", Action.RUN, False)
    assert m.session_id == wire.default_session("", "autogpt-to-service")
    assert parse("hi", reply_to="mine").session_id != m.session_id
    assert parse("{not json, just text").content == "{not json, just text"


def test_json_fields_are_honoured_and_checked() -> None:
    m = parse(
        json.dumps(
            {
                "content": "x",
                "agent": "Backend",
                "action": "create",
                "language": "go",
                "session_id": "conv-1",
                "task_id": "t-1",
                "options": {"delay": 1, "tokens": True},
            }
        )
    )
    assert (m.agent_type, m.action, m.language, m.session_id, m.task_id) == (
        "backend",
        Action.CREATE,
        "go",
        "conv-1",
        "t-1",
    )
    assert m.options == {"delay": "1", "tokens": "true"}
    assert parse("x", headers={"agent": "git", "conversation": "c2"}).agent_type == "git"
    assert parse("x", headers={"conversation": "c2"}).session_id == "c2"


@pytest.mark.parametrize(
    ("body", "kw", "reason"),
    [
        (b"\xff", {}, "not UTF-8"),
        ("{bad", {"content_type": "application/json"}, "not valid JSON"),
        ("[1, 2]", {"content_type": "application/json"}, "must be an object"),
        (json.dumps({"content": 5}), {}, "field 'content' must be a string"),
        (json.dumps({"content": "x", "action": "explode"}), {}, "field 'action': unknown action 'explode'"),
        (json.dumps({"content": "x", "task_id": "../etc"}), {}, "field 'task_id': invalid task id"),
        (json.dumps({"content": "x", "options": ["a"]}), {}, "field 'options'"),
        (json.dumps({"content": "x", "session_id": "a b"}), {}, "invalid session id"),
        ("   ", {}, "empty message"),
        ("x", {"default_agent": ""}, "no agent type"),
        ("x" * (wire.MAX_BODY_BYTES + 1), {}, "too large"),
    ],
)
def test_poison_messages_say_why(body: str | bytes, kw: dict[str, object], reason: str) -> None:
    with pytest.raises(wire.PoisonMessage) as e:
        parse(body, **kw)
    assert reason in e.value.reason


def test_kill_code_plain_or_json_needs_no_agent() -> None:
    assert parse("SIGTERM_FROM_SERVICE", default_agent="").kind == "kill"
    m = parse(json.dumps({"content": "SIGTERM_FROM_SERVICE", "session_id": "c1"}))
    assert (m.kind, m.session_id) == ("kill", "c1")


def test_task_ids_are_stable_per_message_and_valid() -> None:
    a = wire.derive_task_id("q", "msg-1", b"hello", "", "s")
    assert a == wire.derive_task_id("q", "msg-1", b"other body", "c", "s2")  # the message id decides
    assert a != wire.derive_task_id("q", "msg-2", b"hello", "", "s")
    assert a != wire.derive_task_id("q2", "msg-1", b"hello", "", "s")
    b = wire.derive_task_id("q", "", b"hello", "c1", "s")
    assert b == wire.derive_task_id("q", "", b"hello", "c1", "s")
    assert b != wire.derive_task_id("q", "", b"hello", "c2", "s")
    for tid in (a, b):
        assert wire.TASK_ID_RE.match(tid) and len(tid) <= 64


def test_answers_use_the_seeds_roles() -> None:
    ok = wire.result_message(TaskResult("t", TaskState.SUCCEEDED, output="hi"), "s")
    assert ok[:2] == ("ON_RESPONSE", "hi") and ok[2]["state"] == "succeeded"
    cancelled = wire.result_message(TaskResult("t", TaskState.CANCELLED, error="why"), "s")
    assert cancelled[:2] == ("SYSTEM", "SIGTERM_FROM_AUTOGPT") and cancelled[2]["reason"] == "why"
    assert wire.result_message(TaskResult("t", TaskState.FAILED, error="boom"), "s")[:2] == (
        "REPORT",
        "task failed: boom",
    )
    assert json.loads(wire.encode("REPORT", "x", task_id="t", empty="")) == {
        "role": "REPORT",
        "content": "x",
        "task_id": "t",
    }


def test_urls_are_masked_and_resolved_like_the_seed() -> None:
    assert wire.mask_url("amqps://bob:s3cret@mq.example:5671/vh") == "amqps://bob:***@mq.example:5671/vh"
    assert wire.mask_url("amqp://mq/") == "amqp://mq/"
    assert wire.url_password("amqp://bob:p%40ss@mq/") == "p%40ss"
    assert wire.resolve_url(None, {"RABBITMQ_HOST": "rabbit"}) == "amqp://guest:guest@rabbit/"
    assert wire.resolve_url(None, {"RABBITMQ_HOST": "amqp://u:p@h/"}) == "amqp://u:p@h/"
    assert wire.resolve_url(None, {"RABBITMQ_URL": "amqp://a/", "RABBITMQ_HOST": "b"}) == "amqp://a/"
    assert wire.resolve_url("amqp://c/", {"RABBITMQ_URL": "amqp://a/"}) == "amqp://c/"
