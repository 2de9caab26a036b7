"""The link's running tasks (RunningTasks, mixed into link.Link): up to ``slots`` at once (agentd
--concurrency, as granted by orchgpt in REGISTERED), each an asyncio task that streams its
events and sends its REPLY; a RUN past the slots is refused as BUSY (orchgpt requeues it)."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchgpt import logs
from orchgpt.certs import CertPaths
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.models import ApprovalRequest, ApprovalResponse, Delegation, Task, TaskResult, TaskState
from orchgpt.wire import codec
from orchgpt.wire.batching import Outbox

from . import inputs, telemetry, uploads
from .errors import DelegationError, TaskFailed
from .runtime import Agent, TaskContext
from .workspace import workspace_id

if TYPE_CHECKING:
    from collections.abc import Callable

log = logs.get("agentd.link")

MAX_CONCURRENCY = 1024  # the protocol's bound (Register.max_concurrent_tasks; orchgpt.validate)


class RunningTasks:
    """Tasks running on this agent (part of link.Link)."""

    if TYPE_CHECKING:  # set by link.Link and its other parts
        agent: Agent
        name: str
        address: str
        certs: CertPaths
        server_name: str | None
        workspace_root: Path
        workspace_for: Callable[[Task], Path] | None
        outbox: Outbox | None
        connected: asyncio.Event
        stopping: bool
        terminated: bool
        concurrency: int  # slots asked for (agentd --concurrency)
        slots: int  # slots granted (REGISTERED); 1 with a daemon that predates them
        running: dict[str, asyncio.Task[None]]  # task id -> its run, in the order they came
        pending_results: list[TaskResult]
        unconfirmed: dict[str, TaskResult]
        _confirm_on: dict[str, list[str]]
        _delegations: dict[str, asyncio.Future[TaskResult]]
        _approvals: dict[str, asyncio.Future[ApprovalResponse]]

        def _env(self, type_: pb.MessageType.ValueType, **fields: Any) -> pb.Envelope: ...
        def send(self, env: pb.Envelope) -> bool: ...
        def emit(self, ev: Any) -> None: ...
        def _journal(self, result: TaskResult, data: bytes | None = None) -> None: ...
        async def _journal_synced(self) -> None: ...
        def _confirmed(self, task_ids: list[str] | set[str]) -> None: ...
        def _replied_to(self, outbox: Outbox, task_id: str) -> None: ...
        async def ask(self, to: str, payload: bytes, timeout: float = 30.0) -> bytes: ...

    # ---- what runs (REGISTER, HEARTBEAT)
    def running_ids(self) -> list[str]:
        return [task_id for task_id, run in self.running.items() if not run.done()]

    @property
    def current_id(self) -> str:
        """One running task (Register/Heartbeat.current_task, for daemons that predate slots)."""
        ids = self.running_ids()
        return ids[0] if ids else ""

    def granted(self, slots: int) -> None:
        """REGISTERED: the slots orchgpt grants (0: a daemon that predates slots: one)."""
        self.slots = max(1, min(self.concurrency, slots or 1))

    # ---- RUN, CANCEL
    def _start_task(self, env: pb.Envelope) -> None:
        spec = env.task
        ids = self.running_ids()
        if spec.task_id in ids:
            return  # a duplicate after reconnect
        if len(ids) >= self.slots:
            # not a failure of the task: orchgpt requeues it without counting an attempt
            busy = f"agent {self.name} is busy with {', '.join(ids)}"
            self.send(
                self._env(
                    pb.RUN_REFUSED,
                    task_id=spec.task_id,
                    correlation_id=env.id,
                    refusal=pb.Refusal(code="BUSY", reason=busy),
                )
            )
            log.info("run_refused", task_id=spec.task_id, busy_with=ids)
            return
        if self.unconfirmed and self.slots == 1:
            # with one slot orchgpt stores a result before it dispatches again (with more, a RUN
            # may pass a REPLY in flight: the PONG after each REPLY confirms it)
            done = list(self.unconfirmed)
            self.unconfirmed.clear()
            self._confirmed(done)
        req = codec.task_from_spec(spec)
        run = asyncio.create_task(telemetry.run(self, req, env), name=f"task:{req.task_id}")
        self.running[req.task_id] = run
        run.add_done_callback(functools.partial(self._ran, req.task_id))

    def _ran(self, task_id: str, run: asyncio.Task[None]) -> None:
        if self.running.get(task_id) is run:
            del self.running[task_id]

    def cancel_task(self, task_id: str, reason: str) -> None:
        run = self.running.get(task_id)
        if run is not None and not run.done():
            log.info("task_cancel_requested", task_id=task_id, reason=reason)
            run.cancel(reason or "cancelled")

    def cancel_all(self, reason: str) -> list[asyncio.Task[None]]:
        runs = [run for run in self.running.values() if not run.done()]
        for run in runs:
            run.cancel(reason)
        return runs

    def _workspace(self, req: Task) -> Path:
        if self.workspace_for is not None:
            return self.workspace_for(req)
        ws = self.workspace_root / req.task_id
        ws.mkdir(parents=True, exist_ok=True)
        return ws

    async def _run_task(self, req: Task, run_id: str) -> None:
        started = time.monotonic()
        ctx: TaskContext | None = None
        try:
            if self.workspace_for is not None:
                workspace_id(req)  # a bad option ``workspace`` fails the task now, used or not
            ws = functools.partial(self._workspace, req)  # made when the task first uses it
            delegate = functools.partial(self._delegate, parent=req.task_id)
            ctx = TaskContext(req, ws, self.name, self.emit, delegate, self._approve, self.agent.settings, ask=self.ask)
            ctx.status(f"running on {self.name}", TaskState.RUNNING)
            await inputs.fetch(ctx, self.address, self.certs, self.server_name)  # earlier sub-tasks' files
            outcome = await self.agent.run(ctx)
            state = TaskState.SUCCEEDED if outcome.ok else TaskState.FAILED
            result = TaskResult(
                req.task_id,
                state,
                output=outcome.output,
                error=outcome.error if not outcome.ok else "",
                data=outcome.data,
                checks=outcome.checks,
            )
        except asyncio.CancelledError:
            result = TaskResult(req.task_id, TaskState.CANCELLED, error="cancelled")
        except TaskFailed as exc:
            result = TaskResult(req.task_id, TaskState.FAILED, error=str(exc))
        except Exception as exc:
            log.exception("task_crashed", task_id=req.task_id)
            result = TaskResult(req.task_id, TaskState.FAILED, error=f"{type(exc).__name__}: {exc}")
        if ctx is not None:
            result.artifacts = list(ctx.artifacts.values())
            result.usage = ctx.usage
            result.workspace = str(ctx.workspace) if ctx.workspace_made else ""
        result.agent_type = self.agent.type
        result.agent_id = self.name
        result.data.setdefault("attempt", str(req.attempts))
        result.data.setdefault("duration_s", f"{time.monotonic() - started:.3f}")
        abandoned = self.stopping and result.state == TaskState.CANCELLED and not self.terminated
        rpb = codec.result_to_pb(result)  # made once: the journal's line and the REPLY
        if not abandoned:
            self._journal(result, rpb.SerializeToString())
        log.info("task_done", task_id=req.task_id, state=str(result.state), error=result.error or None)
        if abandoned:
            # stopped by a signal: no result, so that the orchestrator requeues the task elsewhere
            log.info("task_abandoned", task_id=req.task_id)
            return
        env = self._env(pb.REPLY, task_id=req.task_id, correlation_id=run_id, reply=pb.Reply(result=rpb))
        # the files go first: when the REPLY is stored they are in the daemon's artifact store
        uploaded = True
        if result.artifacts and ctx is not None:
            try:
                uploaded = await uploads.upload(
                    lambda: self.outbox, self._env, req.task_id, Path(result.workspace), result.artifacts
                )
            except asyncio.CancelledError:  # cancelled while uploading: the result still goes
                log.info("artifact_upload_cancelled", task_id=req.task_id)
        await self._synced_for_reply()  # the REPLY goes once its result is on disk
        ob = self.outbox
        if uploaded and ob is not None and ob.put(env):
            self.unconfirmed[req.task_id] = result
            # orchgpt handles a stream's envelopes in order and stores a result before it reads
            # on: its PONG to the PING that follows confirms the REPLY (the journal entry can go)
            self._replied_to(ob, req.task_id)
        else:
            self.pending_results.append(result)  # delivered with the next REGISTER
            log.info("result_kept_for_reconnect", task_id=req.task_id)

    async def _synced_for_reply(self) -> None:
        """The journal is fsynced; a cancellation meanwhile (the task finished already) waits too."""
        synced = asyncio.ensure_future(self._journal_synced())
        while not synced.done():
            try:
                await asyncio.shield(synced)
            except asyncio.CancelledError:
                continue
        synced.result()

    async def _delegate(self, sub: Delegation, parent: str = "") -> TaskResult:
        await asyncio.wait_for(self.connected.wait(), timeout=60)
        parent = parent or self.current_id
        spec = codec.delegation_to_spec(sub, parent)
        env = self._env(pb.DELEGATE_TASK, task_id=parent, task=spec)
        fut: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._delegations[env.id] = fut
        if not self.send(env):
            self._delegations.pop(env.id, None)
            raise DelegationError("not connected to the orchestrator")
        return await fut

    async def _approve(self, req: ApprovalRequest) -> ApprovalResponse:
        fut: asyncio.Future[ApprovalResponse] = asyncio.get_running_loop().create_future()
        self._approvals[req.request_id] = fut
        try:
            return await fut
        finally:
            self._approvals.pop(req.request_id, None)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM: cancel the running tasks (reported as cancelled), close the stream."""
        self.stopping = True
        runs = self.cancel_all("agent stopping")
        if runs:
            await asyncio.wait(runs, timeout=grace)
            await asyncio.sleep(0.05)  # let the REPLYs leave
        if self.outbox is not None:
            self.outbox.close()
