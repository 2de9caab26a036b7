"""An outsider's probe of the daemon's authorization: stubs generated from the .proto alone.

Run as a separate process (tests/test_conformance_authz.py does) so that nothing of the
project is imported: not orchgpt.iac, not agentd, not orchgpt.tls. It acts with several
certificates and reports what it observed as JSON on stdout; the test compares that with
the tables of orchgpt/authz.py.

usage: python conformance_probe.py STUBS_DIR ADDRESS CERTS_DIR DATA_DIR
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc

STUBS, ADDRESS, CERTS, DATA = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
sys.path.insert(0, STUBS)
import iac_pb2 as pb  # noqa: E402
import iac_pb2_grpc as pb_grpc  # noqa: E402
import schedules_pb2 as spb  # noqa: E402
import schedules_pb2_grpc as spb_grpc  # noqa: E402

assert "orchgpt" not in sys.modules and "agentd" not in sys.modules

OPTS = [("grpc.ssl_target_name_override", "localhost")]


def channel(name: str) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(CERTS / "ca.pem").read_bytes(),
        private_key=(CERTS / f"{name}-key.pem").read_bytes(),
        certificate_chain=(CERTS / f"{name}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(ADDRESS, creds, options=OPTS)


def env(type_: int, sender: str, **kw: Any) -> pb.Envelope:
    e = pb.Envelope(id=uuid.uuid4().hex, sender=sender, type=type_)
    for k, v in kw.items():
        if k == "recipient":
            e.recipient.CopyFrom(v)
        elif isinstance(v, str | int | bytes):
            setattr(e, k, v)
        else:
            getattr(e, k).CopyFrom(v)
    return e


class Agent:
    """A Connect stream by hand: a queue of envelopes out, everything received kept."""

    def __init__(self, name: str, agent_type: str) -> None:
        self.name, self.type = name, agent_type
        self.q: asyncio.Queue[pb.Batch | None] = asyncio.Queue()
        self.got: list[pb.Envelope] = []
        self.changed = asyncio.Event()
        self.status: str = ""

    async def _requests(self) -> Any:
        while True:
            b = await self.q.get()
            if b is None:
                return
            yield b

    def send(self, e: pb.Envelope) -> pb.Envelope:
        self.q.put_nowait(pb.Batch(envelopes=[e]))
        return e

    async def start(self) -> str:
        self.ch = channel(self.name)
        self.send(env(pb.REGISTER, self.name, register=pb.Register(agent_type=self.type)))
        self.call = pb_grpc.MeshStub(self.ch).Connect(self._requests())
        self.reader = asyncio.ensure_future(self._read())
        self.hb = asyncio.ensure_future(self._heartbeat())
        try:
            await self.wait(lambda e: e.type == pb.REGISTERED, 10)
            return "OK"
        except Exception:
            return self.status or "NO_REGISTERED"

    async def _read(self) -> None:
        try:
            async for b in self.call:
                self.got.extend(b.envelopes)
                self.changed.set()
        except grpc.aio.AioRpcError as exc:
            self.status = exc.code().name
        self.changed.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.send(env(pb.HEARTBEAT, self.name, heartbeat=pb.Heartbeat(state=pb.IDLE)))

    async def wait(self, pred: Any, timeout: float = 5.0) -> pb.Envelope:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for e in self.got:
                if pred(e):
                    return e
            if self.reader.done():
                raise RuntimeError(f"stream ended: {self.status}")
            if loop.time() > end:
                raise TimeoutError
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), end - loop.time())
            except TimeoutError:
                pass

    async def barrier(self) -> None:
        """Everything sent before is processed once the PONG to this PING is back."""
        p = self.send(env(pb.PING, self.name, ping=pb.Ping(sent_ms=1)))
        await self.wait(lambda e: e.type == pb.PONG and e.correlation_id == p.id, 10)

    def error_for(self, e: pb.Envelope) -> pb.Envelope | None:
        return next((x for x in self.got if x.type == pb.ERROR and x.correlation_id == e.id), None)

    async def close(self) -> None:
        self.hb.cancel()
        self.q.put_nowait(None)
        self.reader.cancel()
        await self.ch.close()


async def unary(name: str, method: str, req: Any, timeout: float = 10.0) -> tuple[str, Any]:
    async with channel(name) as ch:
        try:
            return "OK", await getattr(pb_grpc.MeshStub(ch), method)(req, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details()


async def sunary(name: str, method: str, req: Any) -> tuple[str, Any]:
    """A call of the Schedules service."""
    async with channel(name) as ch:
        try:
            return "OK", await getattr(spb_grpc.SchedulesStub(ch), method)(req, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details()


async def alice_schedule() -> str:
    code, s = await sunary(
        "alice",
        "AddSchedule",
        spb.AddScheduleRequest(cron="0 0 1 1 *", command=pb.Command(agent_type="conftype", action=pb.STATUS_ACTION)),
    )
    assert code == "OK", s
    return str(s.schedule_id)


async def probe_schedules(p: str, r: dict[str, str], lists: dict[str, Any]) -> None:
    """Every Schedules RPC by ``p``, on a schedule of alice's (a fresh one to delete)."""
    sid = await alice_schedule()
    r["AddSchedule"] = (
        await sunary(
            p,
            "AddSchedule",
            spb.AddScheduleRequest(
                cron="0 0 1 1 *", command=pb.Command(agent_type="conftype", action=pb.STATUS_ACTION)
            ),
        )
    )[0]
    code, resp = await sunary(p, "ListSchedules", spb.ListSchedulesRequest())
    r["ListSchedules"] = code
    lists[f"ListSchedules:{p}"] = (sid in {s.schedule_id for s in resp.schedules}) if code == "OK" else None
    r["GetSchedule"] = (await sunary(p, "GetSchedule", spb.GetScheduleRequest(schedule_id=sid)))[0]
    r["PauseSchedule"] = (await sunary(p, "PauseSchedule", spb.ScheduleRequest(schedule_id=sid)))[0]
    r["ResumeSchedule"] = (await sunary(p, "ResumeSchedule", spb.ScheduleRequest(schedule_id=sid)))[0]
    r["DeleteSchedule"] = (await sunary(p, "DeleteSchedule", spb.ScheduleRequest(schedule_id=sid)))[0]


async def stream(name: str, method: str, req: Any, timeout: float = 10) -> tuple[str, list[Any]]:
    out: list[Any] = []
    async with channel(name) as ch:
        try:
            async for item in getattr(pb_grpc.MeshStub(ch), method)(req, timeout=timeout):
                out.append(item)
            return "OK", out
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return "OK", out  # an open stream (Watch of every task): accepted
            return exc.code().name, out


async def submit(name: str, **cmd: Any) -> tuple[str, list[pb.Envelope]]:
    code, batches = await stream(name, "Submit", pb.SubmitRequest(command=pb.Command(**cmd)))
    return code, [e for b in batches for e in b.envelopes]


async def submit_stream(name: str, **cmd: Any) -> str:
    """One SubmitStream call of one submission: its status (an ERROR envelope counts as its code)."""
    async with channel(name) as ch:
        call = pb_grpc.MeshStub(ch).SubmitStream(timeout=10)
        try:
            await call.write(pb.SubmitBatch(submissions=[pb.SubmitRequest(command=pb.Command(**cmd))]))
            await call.done_writing()
            errors = [e.error.code for b in [b async for b in call] for e in b.envelopes if e.HasField("error")]
            return errors[0] if errors else "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


async def main() -> dict[str, Any]:
    obs: dict[str, Any] = {"rpc": {}, "lists": {}, "env": {}, "from_daemon": {}}
    worker, peer = Agent("worker", "conftype"), Agent("peer", "peertype")
    assert await worker.start() == "OK" and await peer.start() == "OK"

    async def run_as_worker(task_id: str, reply: bool) -> pb.Envelope:
        run = await worker.wait(lambda e: e.type == pb.RUN and e.task.task_id == task_id, 10)
        if reply:
            worker.send(
                env(
                    pb.REPLY,
                    "worker",
                    task_id=task_id,
                    correlation_id=run.id,
                    reply=pb.Reply(result=pb.TaskResult(task_id=task_id, state=pb.SUCCEEDED, output="done")),
                )
            )
        return run

    # alice's finished task and alice's running one (assigned to worker)
    done = asyncio.ensure_future(
        submit("alice", agent_type="conftype", action=pb.RUN_ACTION, input="a", task_id="alice-t")
    )
    await run_as_worker("alice-t", reply=True)
    code, _ = await done
    assert code == "OK", code
    (DATA / "workspaces" / "alice-t").mkdir(parents=True, exist_ok=True)
    (DATA / "workspaces" / "alice-t" / "out.txt").write_text("artifact")
    live = asyncio.ensure_future(
        submit("alice", agent_type="conftype", action=pb.RUN_ACTION, input="b", task_id="alice-live")
    )
    await run_as_worker("alice-live", reply=False)
    got = await unary("alice", "GetTask", pb.GetTaskRequest(task_id="alice-t"))
    session = got[1].task.session_id
    # alice's sessions for the session operations (finished at once: the STATUS action), one per
    # principal that may change them ("-alice", and "-boss" for the admin; bob tries the latter)
    for sid in ("c-alice", "c-boss", "d-alice", "d-boss", "m-alice", "m-boss"):
        code, _ = await submit("alice", agent_type="conftype", action=pb.STATUS_ACTION, session_id=sid, task_id=sid)
        assert code == "OK", code
    (DATA / "workflows.d").mkdir(parents=True, exist_ok=True)
    (DATA / "workflows.d" / "conf.toml").write_text('name = "conf"\ntype = "sequential"\nagents = ["conftype"]\n')

    principals = ["alice", "bob", "boss", "worker", "outsider", "server"]
    graph = json.dumps({"nodes": [{"id": "v", "block": "value", "input": {"value": 1}}]})
    for g in ["alice-g", *(f"alice-del-{p}" for p in principals)]:
        code, _ = await unary("alice", "CreateGraph", pb.CreateGraphRequest(definition=graph, graph_id=g), timeout=60.0)
        assert code == "OK", code
    for p in principals:
        r: dict[str, str] = {}
        if p in ("worker",):
            r["Connect"] = "OK"  # connected above
        else:
            a = Agent(p, "conftype2")
            r["Connect"] = await a.start()
            await a.close()
        r["Submit"] = (await submit(p, agent_type="conftype", action=pb.STATUS_ACTION))[0]
        r["Watch(task)"] = (await stream(p, "Watch", pb.WatchRequest(task_id="alice-t")))[0]
        r["Watch(all)"] = (await stream(p, "Watch", pb.WatchRequest(), timeout=1.0))[0]
        r["ListAgents"] = (await unary(p, "ListAgents", pb.ListAgentsRequest()))[0]
        r["GetTask"] = (await unary(p, "GetTask", pb.GetTaskRequest(task_id="alice-t")))[0]
        code, resp = await unary(p, "ListTasks", pb.ListTasksRequest(limit=100, include_children=True))
        r["ListTasks"] = code
        obs["lists"][f"ListTasks:{p}"] = sorted(t.task_id for t in resp.tasks) if code == "OK" else []
        r["CancelTask"] = (await unary(p, "CancelTask", pb.CancelTaskRequest(task_id="alice-t")))[0]
        r["Approve"] = (
            await unary(
                p,
                "Approve",
                pb.ApproveRequest(
                    task_id="alice-live", response=pb.ApprovalResponse(request_id=f"req-{p}", decision=pb.APPROVE)
                ),
            )
        )[0]
        code, chunks = await stream(p, "FetchArtifact", pb.FetchArtifactRequest(task_id="alice-t", path="out.txt"))
        r["FetchArtifact"] = code if code != "OK" or b"".join(c.data for c in chunks) == b"artifact" else "BAD"
        code, resp = await unary(p, "ListSessions", pb.ListSessionsRequest(limit=100))
        r["ListSessions"] = code
        obs["lists"][f"ListSessions:{p}"] = (session in {s.session_id for s in resp.sessions}) if code == "OK" else None
        r["PublishSession"] = (await unary(p, "PublishSession", pb.PublishSessionRequest(session_id=session)))[0]
        mine = "alice" if p == "alice" else "boss"
        r["ListWorkflows"] = (await unary(p, "ListWorkflows", pb.ListWorkflowsRequest()))[0]
        r["GetWorkflow"] = (await unary(p, "GetWorkflow", pb.GetWorkflowRequest(name="conf")))[0]
        r["ListMessages"] = (await unary(p, "ListMessages", pb.ListMessagesRequest(session_id=session)))[0]
        r["DeleteMessage"] = (await unary(p, "DeleteMessage", pb.DeleteMessageRequest(message_id=f"m-{mine}:0")))[0]
        r["ClearSession"] = (await unary(p, "ClearSession", pb.SessionRef(session_id=f"c-{mine}")))[0]
        r["DeleteSession"] = (await unary(p, "DeleteSession", pb.SessionRef(session_id=f"d-{mine}")))[0]
        r["CreateGraph"] = (
            await unary(p, "CreateGraph", pb.CreateGraphRequest(definition=graph, graph_id=f"{p}-g"), timeout=60.0)
        )[0]
        code, resp = await unary(p, "ListGraphs", pb.ListGraphsRequest())
        r["ListGraphs"] = code
        obs["lists"][f"ListGraphs:{p}"] = sorted(g.graph_id for g in resp.graphs) if code == "OK" else []
        r["GetGraph"] = (await unary(p, "GetGraph", pb.GetGraphRequest(graph_id="alice-g")))[0]
        r["DeleteGraph"] = (await unary(p, "DeleteGraph", pb.DeleteGraphRequest(graph_id=f"alice-del-{p}")))[0]
        r["ListBlocks"] = (await unary(p, "ListBlocks", pb.ListBlocksRequest(), timeout=60.0))[0]
        await probe_schedules(p, r, obs["lists"])
        r["SubmitStream"] = await submit_stream(
            p, agent_type="conftype", action=pb.STATUS_ACTION, task_id=f"stream-{p}"
        )
        obs["rpc"][p] = r
    # Watch(all) of a client shows its own tasks only: bob watches while alice's task runs
    obs["approvals_seen_by_worker"] = sorted(
        e.approval_response.request_id for e in worker.got if e.type == pb.APPROVAL_RESPONSE
    )

    # ---- envelopes from an agent: every kind, to the daemon and to each kind of recipient
    bodies: dict[str, dict[str, Any]] = {
        "REGISTER": {"register": pb.Register(agent_type="conftype")},
        "REGISTERED": {"registered": pb.Registered(agent_id="peer")},
        "HEARTBEAT": {"heartbeat": pb.Heartbeat(state=pb.BUSY, current_task="alice-live")},
        "PING": {"ping": pb.Ping(sent_ms=1)},
        "PONG": {},
        "TASK_EVENT": {"event": pb.TaskEvent(task_id="alice-live", log=pb.LogEvent(text="log"))},
        "REPLY(result)": {
            "task_id": "nope",
            "reply": pb.Reply(result=pb.TaskResult(task_id="nope", state=pb.SUCCEEDED)),
        },
        "DELEGATE_TASK": {
            "task_id": "alice-live",
            "task": pb.TaskSpec(agent_type="peertype", action=pb.RUN_ACTION, input="sub", parent_task_id="alice-live"),
        },
        "RUN_REFUSED": {"task_id": "nope", "refusal": pb.Refusal(reason="probe", code="BUSY")},
        "ERROR": {"error": pb.Error(code="INTERNAL", message="probe")},
        "RUN": {"task": pb.TaskSpec(task_id="forged", agent_type="peertype", input="x")},
        "CANCEL": {"task_id": "alice-live", "cancel": pb.Cancel(reason="forged")},
        "TERMINATE": {"terminate": pb.Terminate(reason="forged")},
        "APPROVAL_RESPONSE": {"approval_response": pb.ApprovalResponse(request_id="x", decision=pb.APPROVE)},
        "COMMAND": {"payload": b"cmd"},
        "REPLY(payload)": {"correlation_id": "unsolicited", "payload": b"r"},
        "BROADCAST": {"broadcast": pb.Broadcast(topic="t", text="hello")},
        # to the daemon: an upload of the worker's own running task's file (orchgpt.artifact_store)
        "FILE_TRANSFER": {
            "task_id": "alice-live",
            "file_chunk": pb.FileChunk(path="f", data=b"x", eof=True, size=1, sha256=hashlib.sha256(b"x").hexdigest()),
        },
        # to the daemon: where an upload cut by a disconnect goes on; answered with FILE_RESUME_AT
        "FILE_RESUME": {
            "task_id": "alice-live",
            "file_chunk": pb.FileChunk(path="f", size=1, sha256=hashlib.sha256(b"x").hexdigest()),
        },
        "FILE_RESUME_AT": {"task_id": "alice-live", "file_chunk": pb.FileChunk(path="f", offset=1)},
        "APPROVAL_REQUEST": {"approval_request": pb.ApprovalRequest(request_id="q", tool="t")},
        "CREATE": {"task": pb.TaskSpec(agent_type="peertype", input="x")},
    }
    recipients = {
        "daemon": None,
        "agent_id": pb.Address(agent_id="peer"),
        "agent_type": pb.Address(agent_type="peertype"),
        "broadcast": pb.Address(broadcast=True),
    }
    sent: dict[str, pb.Envelope] = {}
    for kind, body in bodies.items():
        type_ = getattr(pb, kind.split("(")[0])
        for where, rcpt in recipients.items():
            kw = dict(body)
            if rcpt is not None:
                kw["recipient"] = rcpt
            sent[f"{kind}@{where}"] = worker.send(env(type_, "worker", **kw))
    await worker.barrier()
    fence = worker.send(
        env(pb.BROADCAST, "worker", recipient=pb.Address(agent_id="peer"), broadcast=pb.Broadcast(topic="fence"))
    )
    await peer.wait(lambda e: e.id == fence.id, 10)
    await asyncio.sleep(0.2)
    peer_ids = {e.id for e in peer.got}
    for key, e in sent.items():
        err = worker.error_for(e)
        if (
            err is not None
            and err.error.code in ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED")
            and "(rule " in err.error.message
        ):
            rule = err.error.message.rsplit("(rule ", 1)[1].rstrip(")")
            obs["env"][key] = f"REFUSED:{err.error.code}:{rule}" + (":DELIVERED" if e.id in peer_ids else "")
        elif e.id in peer_ids:
            obs["env"][key] = "FORWARDED"
        else:
            obs["env"][key] = "ACCEPTED" if err is None else f"ACCEPTED:{err.error.code}"
    obs["stream_up_after_refusals"] = not worker.reader.done()

    # ---- COMMAND and its REPLY: answered once, to the asker only
    cmd = peer.send(env(pb.COMMAND, "peer", recipient=pb.Address(agent_id="worker"), payload=b"q"))
    got_cmd = await worker.wait(lambda e: e.id == cmd.id, 10)
    wrong = worker.send(
        env(pb.REPLY, "worker", recipient=pb.Address(agent_id="outsider-x"), correlation_id=got_cmd.id, payload=b"no")
    )
    right = worker.send(
        env(pb.REPLY, "worker", recipient=pb.Address(agent_id="peer"), correlation_id=got_cmd.id, payload=b"yes")
    )
    again = worker.send(
        env(pb.REPLY, "worker", recipient=pb.Address(agent_id="peer"), correlation_id=got_cmd.id, payload=b"again")
    )
    await worker.barrier()
    reply = await peer.wait(lambda e: e.id == right.id, 10)
    obs["command_reply"] = {
        "delivered": reply.payload == b"yes" and reply.correlation_id == cmd.id,
        "wrong_recipient_refused": bool(worker.error_for(wrong)),
        "second_answer_refused": bool(worker.error_for(again)),
        "unsolicited_refused": "reply-answers-a-command" in obs["env"]["REPLY(payload)@agent_id"],
    }

    # ---- what the daemon sends: every kind it issues, always as sender "orchgpt"
    sub = await peer.wait(lambda e: e.type == pb.RUN, 10)  # the sub-task worker delegated above
    peer.send(
        env(
            pb.REPLY,
            "peer",
            task_id=sub.task.task_id,
            correlation_id=sub.id,
            reply=pb.Reply(result=pb.TaskResult(task_id=sub.task.task_id, state=pb.SUCCEEDED, output="sub done")),
        )
    )
    await worker.wait(lambda e: e.type == pb.REPLY and e.WhichOneof("body") == "reply", 10)
    code, _ = await unary("alice", "CancelTask", pb.CancelTaskRequest(task_id="alice-live"))
    await worker.wait(lambda e: e.type == pb.CANCEL, 10)
    await submit("alice", agent_type="peertype", action=pb.TERMINATE_ACTION)
    await peer.wait(lambda e: e.type == pb.TERMINATE, 10)
    await live
    for e in [*worker.got, *peer.got]:
        if e.sender == "orchgpt" or e.type in (
            pb.RUN,
            pb.CANCEL,
            pb.TERMINATE,
            pb.REGISTERED,
            pb.APPROVAL_RESPONSE,
            pb.PING,
            pb.ERROR,
        ):
            kind = pb.MessageType.Name(e.type)
            if e.type == pb.REPLY:
                kind = "REPLY(payload)" if e.WhichOneof("body") == "payload" else "REPLY(result)"
            obs["from_daemon"].setdefault(kind, set()).add(e.sender)
    obs["from_daemon"] = {k: sorted(v) for k, v in obs["from_daemon"].items()}
    await worker.close()
    await peer.close()
    return obs


if __name__ == "__main__":
    result = asyncio.run(asyncio.wait_for(main(), 60))
    print(json.dumps(result))
