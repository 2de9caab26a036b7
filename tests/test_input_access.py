"""An agent may download the files of the inputs of a task it runs, and nothing more
(orchgpt.input_access; FetchArtifact's agent rule)."""

from __future__ import annotations

from orchgpt.certs import Identity
from orchgpt.input_access import input_task
from orchgpt.models import Task, TaskResult, TaskState


def test_only_the_inputs_of_a_task_the_agent_runs() -> None:
    earlier = Task(task_id="w", agent_type="echo", agent_id="writer")
    other = Task(task_id="x", agent_type="echo", agent_id="writer")
    git = Task(
        task_id="g",
        agent_type="git",
        agent_id="committer",
        inputs=[TaskResult("w", TaskState.SUCCEEDED)],
    )
    tasks = {t.task_id: t for t in (earlier, other, git)}
    running = {"committer": {"g"}}

    def on(agent: str) -> set[str]:
        return running.get(agent, set())

    me = Identity("committer", "agent")
    assert input_task(me, "w", on, tasks.get) is earlier
    assert input_task(me, "x", on, tasks.get) is None  # not an input
    assert input_task(Identity("lead", "agent"), "w", on, tasks.get) is None  # runs nothing with it
    assert input_task(Identity("committer", "client"), "w", on, tasks.get) is None  # agents only
    git.agent_id = "someone-else"  # reassigned: no longer its task
    assert input_task(me, "w", on, tasks.get) is None
    git.agent_id = "committer"
    running["committer"] = set()  # finished: the right ends with the task
    assert input_task(me, "w", on, tasks.get) is None
