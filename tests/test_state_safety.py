"""Never silently lose what was acknowledged; every daemon owns its state (issue 11, 3 and 5;
issue 10: the store and every state file 0600, the data dir 0700).

Real daemons, real SQLite files, a real tmpfs for a full disk, a real immutable file for a
store that cannot be written.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchgpt.certs import paths_for
from orchgpt.errors import ClientError
from orchgpt.models import Action, Command, EventKind, TaskState
from orchgpt.store.sqlite import SqliteStore
from orchgpt.tls import secure_channel
from tests.support.mesh import Daemon, await_for, wait_for

pytestmark = pytest.mark.timeout(90)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def run_task(client, cmd: Command, timeout: float = 30):  # type: ignore[no-untyped-def]
    events = []

    async def go() -> None:
        async for ev in client.submit(cmd):
            events.append(ev)

    await asyncio.wait_for(go(), timeout)
    return events


async def health(d: Daemon) -> int:
    async with secure_channel(d.address, paths_for(d.certs, "cli")) as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return r.status


def chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# ---- finding 3: the data dir deleted under a running daemon ------------------------------


def _gone_already(func: object, path: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
    if not isinstance(exc[1], FileNotFoundError):
        raise exc[1]


@pytest.mark.sqlite_only("the SQLite file deleted under the daemon (PostgreSQL: test_store_postgres.py)")
async def test_a_store_deleted_under_the_daemon_refuses_work_and_fails_health(daemon_factory) -> None:
    d: Daemon = daemon_factory().start()
    async with d.client() as c:
        events = await run_task(c, Command("echo", Action.RUN, "before"))
        assert events[-1].result is not None and events[-1].result.output == "before"
        assert await health(d) == SERVING
        # the daemon's own files come and go meanwhile (a local agent's results file): tolerate them
        shutil.rmtree(d.data_dir, onerror=_gone_already)
        for i in range(10):
            with pytest.raises(ClientError) as ei:
                await run_task(c, Command("echo", Action.RUN, f"after-{i}", task_id=f"after-{i}"))
            assert ei.value.code == "UNAVAILABLE", ei.value
            assert "was deleted" in str(ei.value) and "orchgpt.db" in str(ei.value)
        await await_for(lambda: health(d), timeout=10, what="a health answer")
        assert await health(d) == NOT_SERVING
    line = next((ln for ln in d.log().splitlines() if '"store_unavailable"' in ln), "")
    assert "error" in line and "was deleted" in line, d.log()[-3000:]
    # nothing was acknowledged, so nothing is missing: a new daemon on the path knows none of them
    assert d.stop() == 0
    d.start()
    async with d.client() as c:
        ids = {t.task_id for t in await c.list_tasks(limit=100)}
    assert not any(i.startswith("after-") for i in ids)


async def test_a_replaced_store_file_is_not_written_to(tmp_path: Path) -> None:
    path = tmp_path / "s" / "orchgpt.db"
    store = SqliteStore(path)
    faults: list[str] = []
    store.on_fault = faults.append
    store.probe()
    other = tmp_path / "other.db"
    SqliteStore(other).close()
    os.replace(other, path)  # another file now lives at the path
    from orchgpt.errors import StoreError

    with pytest.raises(StoreError, match="was replaced by another file"):
        store.record_messages([{"id": "m1", "type": "COMMAND"}])
    with pytest.raises(StoreError, match="was replaced by another file"):
        store.probe()  # quiet: not told again
    assert len(faults) == 1 and "replaced" in faults[0]
    store.close()


# ---- disk full and a store that cannot be written -------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: Path) -> None:
    """Fill the file system to the last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 16
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)


async def test_a_full_disk_refuses_work_with_a_clear_status_and_recovers(daemon_factory, small_fs: Path) -> None:
    d: Daemon = daemon_factory("--store", str(small_fs / "orchgpt.db")).start()
    async with d.client() as c:
        ok = await run_task(c, Command("echo", Action.RUN, "fits", task_id="fits"))
        assert ok[-1].result is not None and ok[-1].result.state == TaskState.SUCCEEDED
        fill(small_fs)
        refused = None
        for i in range(20):  # the WAL may still have room for a few small writes
            try:
                await run_task(c, Command("echo", Action.RUN, "x" * 200_000, task_id=f"big-{i}"))
            except ClientError as exc:
                refused = exc
                break
        assert refused is not None, "a full disk never refused a task"
        assert refused.code == "UNAVAILABLE" and "full" in str(refused), refused
        assert await health(d) == NOT_SERVING
        assert '"store_unavailable"' in d.log()
        (small_fs / "filler").unlink()
        await await_for(lambda: _serving(d), timeout=15, what="health SERVING once the disk has room")
        again = await run_task(c, Command("echo", Action.RUN, "room again", task_id="again"))
        assert again[-1].result is not None and again[-1].result.output == "room again"
    assert d.stop() == 0
    d.start()
    async with d.client() as c:
        task, _, _ = await c.get_task("again")
        assert task.state == TaskState.SUCCEEDED
        task, _, _ = await c.get_task("fits")
        assert task.state == TaskState.SUCCEEDED


async def _serving(d: Daemon) -> bool:
    return await health(d) == SERVING


@pytest.mark.sqlite_only("chattr +i on the SQLite file and its WAL (PostgreSQL: test_store_postgres_daemon.py)")
async def test_a_store_that_cannot_be_written_refuses_work(daemon_factory) -> None:
    d: Daemon = daemon_factory().start()
    db = d.data_dir / "orchgpt.db"
    files = [db, Path(f"{db}-wal")]  # not -shm: it is mapped, and an immutable map faults
    try:
        async with d.client() as c:
            await run_task(c, Command("echo", Action.RUN, "one"))
            for f in files:
                r = chattr("+i", f)
                if r.returncode != 0:
                    pytest.skip(f"chattr +i is not available here: {r.stderr.strip()}")
            with pytest.raises(ClientError) as ei:
                await run_task(c, Command("echo", Action.RUN, "two"))
            assert ei.value.code == "UNAVAILABLE"
            assert "cannot be written" in str(ei.value), ei.value
            assert await health(d) == NOT_SERVING
            for f in files:
                assert chattr("-i", f).returncode == 0
            await await_for(lambda: _serving(d), timeout=15, what="health SERVING once writable again")
            done = await run_task(c, Command("echo", Action.RUN, "three"))
            assert done[-1].result is not None and done[-1].result.output == "three"
    finally:
        for f in files:
            chattr("-i", f)


# ---- finding 5: two daemons on one data dir -------------------------------------------------


def test_a_second_daemon_on_a_data_dir_in_use_exits_naming_the_holder(daemon_factory, tmp_path: Path) -> None:
    first: Daemon = daemon_factory().start()
    second: Daemon = daemon_factory(data_dir=first.data_dir)
    second.workdir = tmp_path / "second"
    second.workdir.mkdir()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as ei:
        second.start()
    assert time.monotonic() - t0 < 15
    assert second.proc is not None and second.proc.returncode not in (0, None)
    msg = str(ei.value)
    assert f"pid {first.proc.pid}" in msg and first.address in msg and "in use" in msg, msg  # type: ignore[union-attr]
    holder = json.loads((first.data_dir / "orchgpt.lock").read_text())
    assert holder["pid"] == first.proc.pid and holder["address"] == first.address  # type: ignore[union-attr]
    # once the first one is gone (even killed), the data dir is free again
    first.kill()
    second.start()
    assert second.proc is not None and second.proc.poll() is None


# ---- issue 10: modes ------------------------------------------------------------------------


@pytest.mark.sqlite_only("the modes of the SQLite file and its WAL")
async def test_the_store_and_state_files_are_private(daemon_factory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old = SqliteStore(data / "orchgpt.db")  # a store from before: 0644
    old.close()
    os.chmod(data / "orchgpt.db", 0o644)
    d: Daemon = daemon_factory(data_dir=data).start()
    async with d.client() as c:
        for i in range(3):
            events = await run_task(c, Command("echo", Action.RUN, f"t{i}"))
            assert events[-1].kind == EventKind.RESULT
    db = data / "orchgpt.db"
    wait_for(lambda: Path(f"{db}-wal").exists(), what="the WAL")
    assert mode(data) == 0o700
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), data / "orchgpt.lock"):
        assert mode(f) == 0o600, (f, oct(mode(f)))
    for root, dirs, files in os.walk(data / "agents"):
        for name in dirs:
            assert mode(Path(root, name)) == 0o700, (root, name)
        for name in files:
            assert mode(Path(root, name)) == 0o600, (root, name)
    logs = list((data / "logs").glob("*.log"))
    assert logs and all(mode(p) == 0o600 for p in logs)
    assert mode(data / "logs") == 0o700


def test_the_lock_is_exclusive_and_records_its_holder(tmp_path: Path) -> None:
    from orchgpt.datadir import DataDirInUse, DataDirLock, holder_of

    data = tmp_path / "data"
    first = DataDirLock(data).acquire()
    first.record("127.0.0.1:1234")
    assert holder_of(data) == {"pid": os.getpid(), "address": "127.0.0.1:1234", "since": holder_of(data)["since"]}
    with pytest.raises(DataDirInUse, match=rf"pid {os.getpid()}, listening on 127\.0\.0\.1:1234"):
        DataDirLock(data).acquire()
    first.release()
    again = DataDirLock(data).acquire()  # free once released
    assert again.held and mode(data) == 0o700 and mode(data / "orchgpt.lock") == 0o600
    again.release()
