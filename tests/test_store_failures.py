"""SqliteStore when things go wrong: committed writes survive SIGKILL; corrupt, unreachable, read-
only and full stores are reported by name."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchgpt.errors import StoreError
from orchgpt.models import (
    EventKind,
    Task,
    TaskEvent,
    TaskState,
)
from orchgpt.store.sqlite import SqliteStore
from tests.support import store_fixtures

# The shared fixtures (pytest finds a fixture by its name in the test's module).
db = store_fixtures.db


WRITER = textwrap.dedent(
    """
    import sys, time
    from orchgpt.models import Task, TaskState, TaskEvent, EventKind, TaskResult
    from orchgpt.store.sqlite import SqliteStore
    s = SqliteStore(sys.argv[1])
    states = [TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING, TaskState.SUCCEEDED]
    for i in range(40):
        t = Task(task_id=f"k{i:02d}", agent_type="echo", input=str(i), session_id="crash",
                 created_ms=1000 + i)
        s.create_task(t)
        t.state = states[i % 4]
        if t.state.terminal:
            t.result = TaskResult(task_id=t.task_id, state=t.state, output=str(i))
        s.save_task(t)
        s.append_events([TaskEvent(task_id=t.task_id, kind=EventKind.LOG, seq=j, text=f"{i}.{j}")
                         for j in range(1, 6)])
    # A write in flight when the process dies: never committed.
    s._conn.execute("BEGIN IMMEDIATE")
    s._conn.execute("UPDATE tasks SET state = 'succeeded' WHERE task_id = 'k00'")
    print("committed", flush=True)
    time.sleep(60)
    """
)


def test_committed_writes_survive_sigkill(db: Path, tmp_path: Path) -> None:
    db.parent.mkdir(parents=True)
    errlog = tmp_path / "writer.err"
    with errlog.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while line != "committed":  # skip log lines
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"writer did not report within 60 s: {errlog.read_text()}"
            raw = proc.stdout.readline()
            assert raw, f"writer exited early: {errlog.read_text()}"
            line = raw.strip()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert Path(str(db) + "-wal").exists()  # the commits live in the WAL, not yet checkpointed
    s = SqliteStore(db)
    try:
        tasks = s.list_tasks(limit=1000)
        assert len(tasks) == 40
        unfinished = s.unfinished_tasks()
        assert [t.task_id for t in unfinished] == [f"k{i:02d}" for i in range(40) if i % 4 != 3]
        assert s.get_task("k00") is not None and s.get_task("k00").state is TaskState.QUEUED  # type: ignore[union-attr]
        done = s.get_task("k03")
        assert done is not None and done.result is not None and done.result.output == "3"
        assert [e.text for e in s.events("k39")] == [f"39.{j}" for j in range(1, 6)]
        # The store is writable again: the dead writer's lock is gone.
        t = unfinished[0]
        t.state = TaskState.FAILED
        t.error = "orchestrator restarted"
        s.save_task(t)
        assert s.get_task(t.task_id).state is TaskState.FAILED  # type: ignore[union-attr]
    finally:
        s.close()


def test_corrupt_file_is_reported_at_open(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite, just garbage bytes " * 200)
    with pytest.raises(StoreError) as exc:
        SqliteStore(db)
    msg = str(exc.value)
    assert str(db) in msg and "file is not a database" in msg and "corrupt" in msg


def test_directory_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "sub" / "orchgpt.db"  # a parent is a regular file: mkdir fails, even as root
    with pytest.raises(StoreError) as exc:
        SqliteStore(path)
    assert str(path) in str(exc.value) and "cannot create directory" in str(exc.value)


def test_path_that_is_a_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SqliteStore(tmp_path)


def test_full_store_fails_the_write_by_name_and_keeps_earlier_data(db: Path) -> None:
    s = SqliteStore(db, max_size_bytes=256 * 1024)
    try:
        s.create_task(Task(task_id="before", agent_type="echo"))
        with pytest.raises(StoreError) as exc:
            for i in range(1000):
                s.create_task(Task(task_id=f"big{i}", agent_type="echo", input="x" * 20_000))
        msg = str(exc.value)
        assert str(db) in msg and "database or disk is full" in msg
        failing = msg.split("create task ")[1].split(" ")[0]
        assert s.get_task(failing) is None  # rolled back, never acknowledged
        assert s.get_task("before") is not None  # reads still work
        assert not s._conn.in_transaction
        with pytest.raises(StoreError, match="append 1 events failed: database or disk is full"):
            s.append_events([TaskEvent(task_id="before", kind=EventKind.TOKEN, seq=1, text="y" * 300_000)])
    finally:
        s.close()


def test_store_full_at_open_is_reported(db: Path) -> None:
    with pytest.raises(StoreError) as exc:
        SqliteStore(db, max_size_bytes=8 * 1024)  # too small for the schema
    assert str(db) in str(exc.value) and "full" in str(exc.value)


def _immutable(path: Path, on: bool) -> bool:
    chattr = shutil.which("chattr")
    if not chattr:
        return False
    r = subprocess.run([chattr, "+i" if on else "-i", str(path)], capture_output=True, timeout=10)
    return r.returncode == 0


def test_read_only_file_is_reported_at_open(db: Path) -> None:
    SqliteStore(db).close()
    if os.geteuid() != 0:
        db.chmod(0o444)
        db.parent.chmod(0o555)
        undo = lambda: (db.parent.chmod(0o755), db.chmod(0o644))  # noqa: E731
    elif _immutable(db, True):  # root ignores file modes; the immutable flag binds root too
        undo = lambda: _immutable(db, False)  # noqa: E731
    else:
        pytest.skip("running as root without chattr +i support: cannot make a file read-only")
    try:
        with pytest.raises(StoreError) as exc:
            SqliteStore(db)
        msg = str(exc.value)
        assert str(db) in msg
        assert "readonly" in msg or "unable to open" in msg
    finally:
        undo()


FILL_DISK = textwrap.dedent(
    """
    import json, sys
    from orchgpt.errors import StoreError
    from orchgpt.models import Task
    from orchgpt.store.sqlite import SqliteStore
    s = SqliteStore(sys.argv[1])
    out = {"error": "", "stored": 0}
    try:
        for i in range(100000):
            s.create_task(Task(task_id=f"t{i}", agent_type="echo", input="x" * 5000))
            out["stored"] = i + 1
    except StoreError as exc:
        out["error"] = str(exc)
    out["first_readable"] = s.get_task("t0") is not None
    out["failed_absent"] = s.get_task(f"t{out['stored']}") is None
    print(json.dumps(out))
    """
)


def test_a_real_full_disk_fails_the_write_by_name(tmp_path: Path) -> None:
    """A small tmpfs mounted in a private user+mount namespace: a real ENOSPC, no root needed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    db = mnt / "orchgpt.db"
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not permitted here: {probe.stderr.decode().strip()}")
    script = f'mount -t tmpfs -o size=512k tmpfs {mnt} && exec {sys.executable} -c "$0" {db}'
    r = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, FILL_DISK],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["stored"] > 0
    assert str(db) in out["error"] and "database or disk is full" in out["error"], out
    assert out["first_readable"] and out["failed_absent"], out
