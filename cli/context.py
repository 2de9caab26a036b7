"""What a CLI run shares between commands: output, client, session, known tasks and agents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import agents
from .connect import ConnectionSettings, classify, make_client

if TYPE_CHECKING:
    from orchgpt.client import MeshClient
    from orchgpt.models import AgentInfo, ApprovalRequest, ApprovalResponse

    from .approvals import ApprovalQueue
    from .output import Output
    from .runner import TaskView

Approver = Callable[["TaskView", "ApprovalRequest"], Awaitable["ApprovalResponse | None"]]

T = TypeVar("T")

AGENTS_TTL = 5.0  # seconds the cached registry is fresh


def new_session_id() -> str:
    import os

    return os.urandom(16).hex()  # like uuid4().hex, without importing uuid (start-up time)


class Context:
    def __init__(
        self,
        out: Output,
        conn: ConnectionSettings | None = None,
        *,
        session_id: str = "",
        approve_all: bool = False,
        interactive: bool = False,
        reconnect_timeout: float | None = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.out = out
        self.conn = conn or ConnectionSettings()
        self.session_id = session_id or new_session_id()
        self.approve_all = approve_all  # start every task in approval mode
        self.interactive = interactive
        self.fancy = interactive  # symbols (✓ ✗) in result lines
        self.reconnect_timeout = reconnect_timeout  # None: retry for ever (the REPL)
        self.timeout = timeout
        self.views: dict[str, TaskView] = {}
        self.agents: list[AgentInfo] = []
        self.agents_at = 0.0
        self.declared: dict[str, str] = {}  # agent types declared in the daemon's files: description
        self.recent_tasks: list[str] = []  # ids seen in /tasks, /history (completion)
        self.recent_sessions: list[str] = []
        self.connected: bool | None = None  # None: not tried yet
        self.last_error = ""
        self.approver: Approver | None = None
        self.approvals: ApprovalQueue | None = None  # the REPL's pending requests
        # "y -N" (seed 003's continuous commands): calls still approved, by the id of the task
        # tree's root; shared by the task and its sub-tasks (cli.runner.answer keeps it)
        self.continuous: dict[str, int] = {}
        self.speakers: dict[str, str] = {}  # a workflow turn's task id -> its speaker (labels)
        self.workflow_names: list[str] = []  # seen by /workflows (completion)
        self.on_connection_change: Callable[[bool, str], None] | None = None
        self.quit = False
        self._client: MeshClient | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ---- the client
    async def client(self) -> MeshClient:
        if self._client is None:
            self._client = make_client(self.conn)
        return self._client

    @property
    def address(self) -> str:
        if self._client is not None:
            return self._client.address
        from .connect import display_address

        return display_address(self.conn)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:  # closing a dead channel: nothing left to do
                pass

    def set_connected(self, ok: bool, error: str = "") -> None:
        was = self.connected
        self.connected = ok
        self.last_error = error
        if was is not ok and self.on_connection_change is not None:
            self.on_connection_change(ok, error)

    async def call(self, make: Callable[[MeshClient], Awaitable[T]], timeout: float | None = None) -> T:
        """Run one RPC with a timeout; client errors become CliErrors."""
        client = await self.client()
        try:
            result = await asyncio.wait_for(make(client), timeout or self.timeout)
        except TimeoutError:
            from .errors import ConnectionProblem

            self.set_connected(False, "timed out")
            raise ConnectionProblem(
                f"the orchestrator at {self.address} did not answer within {timeout or self.timeout:g}s"
            ) from None
        except Exception as exc:
            err = classify(exc)
            if err.exit_code == 3:
                self.set_connected(False, str(err))
            raise err from None
        self.set_connected(True)
        return result

    # ---- the registry
    async def refresh_agents(self, max_age: float = AGENTS_TTL) -> list[AgentInfo]:
        if time.monotonic() - self.agents_at > max_age:
            self.agents, self.declared = await self.call(lambda c: c.agents_and_types())
            self.agents_at = time.monotonic()
        return self.agents

    def known_types(self) -> list[str]:
        return agents.all_types([*(a.agent_type for a in self.agents), *self.declared])

    # ---- background work (the REPL's tasks)
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in the background; its error is printed as one line."""
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.out.error(str(classify(exc)))

    async def cancel_background(self) -> None:
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    # ---- tasks of this run
    def running(self) -> list[TaskView]:
        return [v for v in self.views.values() if not v.done.is_set()]

    def foreground(self) -> TaskView | None:
        running = self.running()
        return running[-1] if running else None
