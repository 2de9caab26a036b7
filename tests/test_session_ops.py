"""Session operations over the real daemon: a session's transcript (ListMessages), deleting a
message, clearing a session and deleting it, each on the caller's own sessions only (another
user's session or message is NOT_FOUND, as one that does not exist)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchgpt.client import MeshClient
from orchgpt.errors import ClientError
from orchgpt.models import Command, new_id
from tests.support.mesh import Daemon, issue

pytestmark = pytest.mark.timeout(60)


async def echo(c: MeshClient, text: str, session: str, **options: str) -> str:
    last = None
    async for ev in c.submit(Command("echo", input=text, session_id=session, options=options)):
        last = ev
    assert last is not None and last.kind == "result"
    return last.task_id


async def refused(call: object) -> str:
    with pytest.raises(ClientError) as e:
        await call  # type: ignore[misc]
    return e.value.code


def test_session_operations_on_own_sessions_only(daemon: Daemon, certs: Path) -> None:
    bob_certs = issue(certs, "bob", role="client")

    async def go() -> None:
        s = new_id()
        async with daemon.client() as alice, MeshClient(daemon.address, bob_certs) as bob:
            t1 = await echo(alice, "hello", s)
            msgs = await alice.list_messages(s)
            assert [(m.message_id, m.role, m.content) for m in msgs] == [
                (f"{t1}:0", "user", "hello"),
                (f"{t1}:1", "assistant", "hello"),
            ]
            assert msgs[1].speaker == "echo"
            # bob sees nothing of alice's session and changes nothing
            assert await refused(bob.list_messages(s)) == "NOT_FOUND"
            assert await refused(bob.delete_message(f"{t1}:0")) == "NOT_FOUND"
            assert await refused(bob.clear_session(s)) == "NOT_FOUND"
            assert await refused(bob.delete_session(s)) == "NOT_FOUND"
            assert len(await alice.list_messages(s)) == 2
            # alice deletes a message, then clears the session: its tasks stay
            assert await alice.delete_message(f"{t1}:0") == 1
            assert [m.message_id for m in await alice.list_messages(s)] == [f"{t1}:1"]
            assert await refused(alice.delete_message(f"{t1}:0")) == "NOT_FOUND"
            t2 = await echo(alice, "again", s)
            assert await alice.clear_session(s) == 3
            assert await alice.list_messages(s) == []
            assert {t.task_id for t in await alice.list_tasks(session_id=s)} == {t1, t2}
            # a session with a running task is not deleted
            running = asyncio.create_task(echo(alice, "slow", s, delay="30"))
            for _ in range(100):
                if any(t.state == "running" for t in await alice.list_tasks(session_id=s)):
                    break
                await asyncio.sleep(0.1)
            assert await refused(alice.delete_session(s)) == "FAILED_PRECONDITION"
            slow = next(t for t in await alice.list_tasks(session_id=s) if t.input == "slow")
            await alice.cancel(slow.task_id)
            await asyncio.wait_for(running, 10)
            # deleted: its tasks, its messages, the session itself
            assert await alice.delete_session(s) >= 3
            assert s not in {x.session_id for x in await alice.list_sessions()}
            assert await refused(alice.get_task(t1)) == "NOT_FOUND"
            assert await refused(alice.list_messages(s)) == "NOT_FOUND"

    asyncio.run(go())
