"""Which task a REPLY or a TASK_EVENT names (docs/protocol.md §4), and the bounded RUN-id memory."""

from __future__ import annotations

import pytest

from orchgpt import stream_rules as sr
from orchgpt.iac.v1 import iac_pb2 as pb


def _reply(**fields: object) -> pb.Envelope:
    env = pb.Envelope(type=pb.REPLY, reply=pb.Reply(result=pb.TaskResult(state=pb.SUCCEEDED)))
    for k, v in fields.items():
        if k == "result_task_id":
            env.reply.result.task_id = v  # type: ignore[assignment]
        else:
            setattr(env, k, v)
    return env


def test_a_reply_names_its_task_by_result_then_envelope_then_run_id() -> None:
    runs = sr.RunIds()
    runs.remember("a1", "run-1", "t1")
    assert sr.reply_task_id("a1", _reply(result_task_id="t1"), runs) == "t1"
    assert sr.reply_task_id("a1", _reply(task_id="t1"), runs) == "t1"
    assert sr.reply_task_id("a1", _reply(correlation_id="run-1"), runs) == "t1"
    assert sr.reply_task_id("a1", _reply(result_task_id="t1", task_id="t1", correlation_id="run-1"), runs) == "t1"
    # a RUN id sent to another agent names nothing for this one
    with pytest.raises(sr.ProtocolError, match="not the id of a RUN sent to a2"):
        sr.reply_task_id("a2", _reply(correlation_id="run-1"), runs)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({}, "REPLY names no task"),
        ({"result_task_id": "t1", "task_id": "t2"}, "two tasks"),
        ({"task_id": "t2", "correlation_id": "run-1"}, "two tasks"),
    ],
)
def test_a_reply_without_a_task_or_with_two_is_invalid(fields: dict[str, str], words: str) -> None:
    runs = sr.RunIds()
    runs.remember("a1", "run-1", "t1")
    with pytest.raises(sr.ProtocolError, match=words) as ei:
        sr.reply_task_id("a1", _reply(**fields), runs)
    assert ei.value.code == "INVALID_ARGUMENT"


def test_a_reply_without_a_result_body_is_invalid() -> None:
    with pytest.raises(sr.ProtocolError, match=r"reply\.result"):
        sr.reply_task_id("a1", pb.Envelope(type=pb.REPLY, task_id="t1"), sr.RunIds())


def test_an_event_names_its_task_on_the_event_or_the_envelope() -> None:
    ev = pb.TaskEvent(log=pb.LogEvent(text="x"))
    assert sr.event_task_id(pb.Envelope(task_id="t1", event=ev)) == "t1"
    ev.task_id = "t1"
    assert sr.event_task_id(pb.Envelope(event=ev)) == "t1"
    with pytest.raises(sr.ProtocolError, match="two tasks"):
        sr.event_task_id(pb.Envelope(task_id="t2", event=ev))
    with pytest.raises(sr.ProtocolError, match="names no task"):
        sr.event_task_id(pb.Envelope(event=pb.TaskEvent(log=pb.LogEvent(text="x"))))
    with pytest.raises(sr.ProtocolError, match="body `event`"):
        sr.event_task_id(pb.Envelope(task_id="t1"))


def test_run_ids_are_bounded_per_agent_and_forgotten_with_their_tasks() -> None:
    runs = sr.RunIds()
    for i in range(sr.RUNS_PER_AGENT + 10):
        runs.remember("a1", f"run-{i}", f"t{i}")
    assert runs.task_of("a1", "run-0") == ""  # the oldest went
    last = sr.RUNS_PER_AGENT + 9
    assert runs.task_of("a1", f"run-{last}") == f"t{last}"
    runs.forget_task("a1", f"t{last}")
    assert runs.task_of("a1", f"run-{last}") == ""
    runs.prune("a1", keep=set())
    assert runs._by_agent == {}  # nothing left for an agent with no task
