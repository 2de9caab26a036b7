"""`orchgpt a2a add NAME URL`: an external A2A agent joins the mesh as agent type NAME.

A proxy agent (agentd's Link and runtime, with the agent certificate NAME) registers type NAME
with the card's skills as capabilities. Each task it is given becomes an A2A message to the
external agent (a2a-sdk's client): status updates are relayed as LOG events, text artifact
updates as TOKEN events, INPUT_REQUIRED as an approval request whose answer is sent back as the
next message, the final state as the task's result; a mesh CANCEL cancels the A2A task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from orchgpt import logs
from orchgpt.errors import ConfigError
from orchgpt.mesh import AGENT_TYPE_RE
from orchgpt.models import ApprovalDecision, new_id

from .a2a_auth import Credential, bearer, for_card

if TYPE_CHECKING:
    from .runtime import Agent, TaskContext

log = logs.get("agentd.a2a_proxy")

APPROVAL_TOOL = "a2a:input"  # the tool named in the approval a remote INPUT_REQUIRED becomes
_FAILED = {
    a2a.TASK_STATE_FAILED: "failed",
    a2a.TASK_STATE_REJECTED: "rejected",
    a2a.TASK_STATE_CANCELED: "was cancelled",
    a2a.TASK_STATE_AUTH_REQUIRED: "needs auth",
}


@dataclass
class Remote:
    """How to reach the external agent (credentials are read from the environment, never
    stored or logged)."""

    url: str
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    auth_env: str = ""  # an environment variable holding the token (sent by the card's scheme)
    credential: Credential | None = None  # how: set from the card (a2a_auth.py); else Bearer

    def token(self) -> str:
        token = os.environ.get(self.auth_env, "") if self.auth_env else ""
        if self.auth_env and not token:
            raise ConfigError(f"{self.auth_env} is not set (the external agent's credentials)")
        return token

    def http(self) -> httpx.AsyncClient:
        verify: Any = True
        if self.url.startswith("https://"):
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
            if self.client_cert:
                ctx.load_cert_chain(self.client_cert, self.client_key or None)
            verify = ctx
        cred = Credential()
        token = self.token()
        if token:
            cred = self.credential or bearer(token)
        return httpx.AsyncClient(
            verify=verify,
            headers=cred.headers,
            params=cred.params,
            cookies=cred.cookies,
            timeout=httpx.Timeout(30, read=None),
        )


async def fetch_card(remote: Remote) -> a2a.AgentCard:
    async with remote.http() as http:
        try:
            return await A2ACardResolver(http, remote.url).get_agent_card()
        except Exception as exc:
            raise ConfigError(f"cannot read the agent card at {remote.url}: {exc}") from None


def _text(parts: Any) -> str:
    return "".join(p.text for p in parts if p.WhichOneof("content") == "text")


def proxy_agent_class(name: str, card: a2a.AgentCard, remote: Remote) -> type[Agent]:
    """An agentd Agent class of type NAME that runs its tasks on the external agent."""
    from .errors import TaskFailed
    from .runtime import Agent, Outcome

    if not AGENT_TYPE_RE.match(name):
        raise ConfigError(f"agent type {name!r}: use 1-32 lowercase letters, digits, '_' or '-'")
    skills = tuple(dict.fromkeys(s.id or s.name for s in card.skills if s.id or s.name))

    class A2AProxy(Agent):
        type = name
        capabilities = ("a2a", *skills)
        description = card.description or f"the A2A agent {card.name} at {remote.url}"
        needs_model = False

        async def run(self, ctx: TaskContext) -> Outcome:
            async with remote.http() as http:
                client = await create_client(card, ClientConfig(httpx_client=http))
                msg = a2a.Message(role=a2a.ROLE_USER, message_id=new_id(), parts=[a2a.Part(text=ctx.task.input)])
                if ctx.task.options:
                    msg.metadata.update({"options": dict(ctx.task.options)})
                state = _Run()
                try:
                    while True:
                        await state.follow(client.send_message(a2a.SendMessageRequest(message=msg)), ctx)
                        if state.final != a2a.TASK_STATE_INPUT_REQUIRED:
                            break
                        msg = await _answer(ctx, state)
                except asyncio.CancelledError:
                    if state.remote_id:  # the mesh cancelled the task: so is the remote one
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(
                                asyncio.shield(client.cancel_task(a2a.CancelTaskRequest(id=state.remote_id))),
                                5,
                            )
                    raise
            if state.final in _FAILED:
                raise TaskFailed(f"{card.name} {_FAILED[state.final]}: {state.status_text or '(no reason)'}")
            return Outcome(output=state.output(), data={"a2a_task_id": state.remote_id})

    A2AProxy.__name__ = f"A2AProxy_{name}"
    return A2AProxy


class _Run:
    """What the stream of one remote task said so far."""

    def __init__(self) -> None:
        self.remote_id = ""
        self.context_id = ""
        self.final = a2a.TASK_STATE_UNSPECIFIED
        self.status_text = ""
        self.asked: a2a.Message | None = None
        self.artifacts: dict[str, str] = {}  # artifact id -> its text so far (in order)

    def output(self) -> str:
        return "".join(self.artifacts.values()) or self.status_text

    async def follow(self, stream: AsyncIterator[a2a.StreamResponse], ctx: TaskContext) -> None:
        self.final = a2a.TASK_STATE_UNSPECIFIED
        async for ev in stream:
            kind = ev.WhichOneof("payload")
            if kind == "task":
                self.remote_id, self.context_id = ev.task.id, ev.task.context_id
                for art in ev.task.artifacts:
                    self.artifacts.setdefault(art.artifact_id, _text(art.parts))
                self._status(ev.task.status, ctx)
            elif kind == "message":  # a direct answer, no task
                self.status_text = _text(ev.message.parts)
                self.final = a2a.TASK_STATE_COMPLETED
            elif kind == "status_update":
                self.remote_id = self.remote_id or ev.status_update.task_id
                self._status(ev.status_update.status, ctx)
            elif kind == "artifact_update":
                u = ev.artifact_update
                text = _text(u.artifact.parts)
                aid = u.artifact.artifact_id
                if u.append and aid in self.artifacts:
                    self.artifacts[aid] += text
                else:
                    self.artifacts[aid] = text
                ctx.token(text)
            if self.final in _FAILED or self.final in (
                a2a.TASK_STATE_COMPLETED,
                a2a.TASK_STATE_INPUT_REQUIRED,
            ):
                return

    def _status(self, st: a2a.TaskStatus, ctx: TaskContext) -> None:
        text = _text(st.message.parts) if st.HasField("message") else ""
        if text:
            self.status_text = text
            if st.state not in _FAILED and st.state != a2a.TASK_STATE_INPUT_REQUIRED:
                ctx.log(text)
        if st.state == a2a.TASK_STATE_INPUT_REQUIRED:
            self.asked = st.message
        if st.state in _FAILED or st.state in (
            a2a.TASK_STATE_COMPLETED,
            a2a.TASK_STATE_INPUT_REQUIRED,
        ):
            self.final = st.state


async def _answer(ctx: TaskContext, state: _Run) -> a2a.Message:
    """Ask the mesh user (an approval request) and make the next message from the answer."""
    meta = json_format.MessageToDict(state.asked.metadata) if state.asked is not None else {}
    resp = await ctx.approve(APPROVAL_TOOL, json.dumps(meta), state.status_text or "input required")
    if resp.decision in (ApprovalDecision.APPROVE, ApprovalDecision.APPROVE_NEXT):
        text = resp.feedback or "approve"
    elif resp.decision == ApprovalDecision.REJECT:
        text = "reject"
    else:
        text = resp.feedback or "reject"
    msg = a2a.Message(
        role=a2a.ROLE_USER,
        message_id=new_id(),
        task_id=state.remote_id,
        context_id=state.context_id,
        parts=[a2a.Part(text=text)],
    )
    msg.metadata.update({"decision": str(resp.decision)})
    return msg


async def run_proxy(name: str, remote: Remote, address: str, certs: Any, workdir: Path, stop: asyncio.Event) -> None:
    """Fetch the card, then serve tasks of type NAME as the agent NAME until ``stop``."""
    from .link import Link
    from .workspace import task_workspace

    card = await fetch_card(remote)  # (with a bearer token when one is given)
    token = remote.token()
    if token:
        remote.credential = for_card(card, token)
        log.info("a2a_proxy_credential", agent_type=name, scheme=remote.credential.scheme, variable=remote.auth_env)
    cls = proxy_agent_class(name, card, remote)
    log.info(
        "a2a_proxy_starting",
        agent_type=name,
        remote=remote.url,
        remote_name=card.name,
        skills=list(cls.capabilities[1:]),
    )
    workdir.mkdir(parents=True, exist_ok=True)
    link = Link(
        cls(None),
        name,
        address,
        certs,
        workdir,
        workspace_for=lambda req: task_workspace(workdir, req),
        journal=workdir / f"{name}.journal",
    )
    runner = asyncio.create_task(link.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        await link.stop()
        runner.cancel()
    else:
        stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner


# ---------------------------------------------------------------- `orchgpt a2a add` runs this
def run(args: argparse.Namespace) -> int:
    from orchgpt.client import resolve_address, resolve_certs

    logs.configure(args.log_level, args.log_format, service="orchgpt-a2a-proxy")
    if os.environ.get("ORCHGPT_PARENT_PID"):  # run by the daemon: exit when it dies
        from .__main__ import _die_with_parent

        _die_with_parent()
    certs = resolve_certs(args.certs, name=args.name)
    for path in (certs.ca, certs.cert, certs.key):
        if not path.exists():
            raise ConfigError(
                f"{path} does not exist: the proxy connects as the agent {args.name!r} "
                f"(orchgpt certs issue {args.name} --role agent)"
            )
    remote = Remote(args.url.rstrip("/"), args.ca_file, args.client_cert, args.client_key, args.auth_env)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_proxy(
            args.name,
            remote,
            resolve_address(args.address),
            certs,
            Path(args.workdir).resolve(),
            stop,
        )

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    asyncio.run(main())
    return 0


def main() -> None:
    import sys

    from orchgpt.a2a.cli import add_parser
    from orchgpt.errors import OrchgptError

    root = argparse.ArgumentParser(prog="orchgpt a2a")
    add_parser(root.add_subparsers(dest="cmd"))
    args = root.parse_args(["a2a", "add", *sys.argv[1:]])
    try:
        sys.exit(run(args))
    except OrchgptError as exc:
        print(f"orchgpt: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
