"""Issue 21: the result view lists a task's files with their sizes (those not already shown as
they were produced), and the summary line gives their total size."""

from __future__ import annotations

from orchgpt_cli.render import EventRenderer, TaskLabel, plain

from orchgpt.models import Artifact, EventKind, TaskEvent, TaskResult, TaskState

TID = "77aa00bb00000000000000000000cccc"


def test_result_lists_artifacts_with_sizes() -> None:
    r = EventRenderer(TaskLabel(TID, "backend"), prefix_output=False)
    arts = [
        Artifact("app.py", 1536, "s1", "code"),
        Artifact("data/big.bin", 3 * 1024 * 1024, "s2", ""),
        Artifact("README.md", 10, "s3", "document"),
    ]
    seen = [plain(x) for x in r.feed(TaskEvent(TID, EventKind.ARTIFACT, 1, artifact=arts[0]))]
    assert seen == ["[backend 77aa00bb] artifact: app.py (1.5 KB, code)"]
    res = TaskResult(TID, TaskState.SUCCEEDED, artifacts=arts)
    got = [plain(x) for x in r.feed(TaskEvent(TID, EventKind.RESULT, 2, result=res))]
    assert got[0].startswith("[backend 77aa00bb] succeeded (") and got[0].endswith(", 3 artifacts, 3.0 MB)")
    assert got[1:] == [
        "[backend 77aa00bb] artifact: data/big.bin (3.0 MB)",
        "[backend 77aa00bb] artifact: README.md (10 B, document)",
    ]


def test_a_long_list_is_cut() -> None:
    r = EventRenderer(TaskLabel(TID, "backend"))
    res = TaskResult(TID, TaskState.SUCCEEDED, artifacts=[Artifact(f"f{i}.txt", 1) for i in range(25)])
    got = [plain(x) for x in r.feed(TaskEvent(TID, EventKind.RESULT, 1, result=res))]
    assert len(got) == 1 + 20 + 1 and got[-1].endswith(f"... and 5 more (/task {TID})")
