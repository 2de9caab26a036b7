"""Mesh tasks and events <-> A2A v1.0 messages, tasks and stream events (docs/a2a.md).

Pure functions: no I/O beyond reading a built-in agent's docstring for its card.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format
from google.protobuf.message import Message

from ..errors import ErrorCode, OrchgptError
from ..models import Action, AgentInfo, Command, EventKind, Task, TaskEvent, TaskState

PROTOCOL_VERSION = "1.0"
FILE_ARTIFACT = "file-"  # the artifact ids of a result's files: file-0, file-1, ...
OUTPUT_ARTIFACT = "output"  # the artifact id of a task's output (token deltas append to it)
MTLS_SCHEME = "mtls"
APPROVAL_WORDS = {
    "approve": "approve",
    "yes": "approve",
    "y": "approve",
    "ok": "approve",
    "reject": "reject",
    "no": "reject",
    "n": "reject",
    "deny": "reject",
}

_STATES: dict[TaskState, a2a.TaskState] = {
    TaskState.QUEUED: a2a.TASK_STATE_SUBMITTED,
    TaskState.ASSIGNED: a2a.TASK_STATE_WORKING,
    TaskState.RUNNING: a2a.TASK_STATE_WORKING,
    TaskState.SUCCEEDED: a2a.TASK_STATE_COMPLETED,
    TaskState.FAILED: a2a.TASK_STATE_FAILED,
    TaskState.CANCELLED: a2a.TASK_STATE_CANCELED,
}
TERMINAL = frozenset(
    {
        a2a.TASK_STATE_COMPLETED,
        a2a.TASK_STATE_FAILED,
        a2a.TASK_STATE_CANCELED,
        a2a.TASK_STATE_REJECTED,
    }
)


class MappingError(OrchgptError, ValueError):
    """A message the mesh cannot take; the text names the field."""

    code = ErrorCode.INVALID_ARGUMENT


def a2a_state(state: TaskState, waiting_for_input: bool = False) -> a2a.TaskState:
    if waiting_for_input and not state.terminal:
        return a2a.TASK_STATE_INPUT_REQUIRED
    return _STATES[state]


def _struct(meta: Message | None) -> dict[str, Any]:
    """A metadata Struct as a dict (JSON values: their types are checked where they are read)."""
    if meta is None:
        return {}
    return json_format.MessageToDict(meta)


def message_text(msg: a2a.Message) -> str:
    """The text parts of a message, joined by newlines (other parts are refused)."""
    texts = []
    for i, part in enumerate(msg.parts):
        kind = part.WhichOneof("content")
        if kind != "text":
            raise MappingError(f"message.parts[{i}]: only text parts are accepted (got {kind or 'empty'})")
        texts.append(part.text)
    return "\n".join(texts)


def command_from_message(req: a2a.SendMessageRequest, agent_type: str) -> Command:
    """A new mesh task from an A2A message: text parts are the input, context_id the session,
    metadata ``action``, ``language``, ``options`` (a string map) and ``approval`` (bool)."""
    msg = req.message
    meta = {
        **_struct(req.metadata if req.HasField("metadata") else None),
        **_struct(msg.metadata if msg.HasField("metadata") else None),
    }
    action = str(meta.get("action", "run") or "run").lower()
    try:
        act = Action(action)
    except ValueError:
        raise MappingError(
            f"message.metadata.action: unknown action {action!r}; use one of {', '.join(a.value for a in Action)}"
        ) from None
    options = meta.get("options") or {}
    if not isinstance(options, dict):
        raise MappingError("message.metadata.options: must be an object of strings")
    language = meta.get("language") or "python"
    if not isinstance(language, str):
        raise MappingError("message.metadata.language: must be a string")
    return Command(
        agent_type=agent_type,
        action=act,
        input=message_text(msg),
        language=language,
        session_id=msg.context_id,
        approval=bool(meta.get("approval", False)),
        options={str(k): str(v) for k, v in options.items()},
    )


def _text_message(text: str, task: Task, role: a2a.Role = a2a.ROLE_AGENT, suffix: str = "") -> a2a.Message:
    return a2a.Message(
        message_id=f"{task.task_id}:{suffix or 'status'}",
        context_id=task.session_id,
        task_id=task.task_id,
        role=role,
        parts=[a2a.Part(text=text)],
    )


def output_artifact(text: str) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=OUTPUT_ARTIFACT, name="output", parts=[a2a.Part(text=text)])


def status_message(task: Task) -> a2a.Message | None:
    if task.state == TaskState.FAILED or task.state == TaskState.CANCELLED:
        why = task.error or (task.result.error if task.result else "")
        return _text_message(why or str(task.state), task, suffix="final") if why else None
    return None


def to_task(task: Task, waiting: TaskEvent | None = None, history_length: int | None = None) -> a2a.Task:
    """An A2A Task of a mesh task: the input as the user's message in the history, the output as
    the ``output`` artifact, file artifacts as parts naming their path."""
    status = a2a.TaskStatus(state=a2a_state(task.state, waiting is not None))
    status.timestamp.FromMilliseconds(task.updated_ms)
    msg = approval_message(waiting, task) if waiting is not None else status_message(task)
    if msg is not None:
        status.message.CopyFrom(msg)
    out = a2a.Task(id=task.task_id, context_id=task.session_id, status=status)
    out.metadata.update({"agent_type": task.agent_type, "action": str(task.action), "mesh_state": str(task.state)})
    if history_length is None or history_length > 0:
        out.history.append(_text_message(task.input, task, a2a.ROLE_USER, "input"))
    r = task.result
    if r is not None and r.output:
        out.artifacts.append(output_artifact(r.output))
    if r is not None:
        for i, art in enumerate(r.artifacts):
            part = a2a.Part(text=art.path, filename=art.path.rsplit("/", 1)[-1])
            a = a2a.Artifact(artifact_id=f"{FILE_ARTIFACT}{i}", name=art.path, parts=[part])
            a.metadata.update({"path": art.path, "size": art.size, "kind": art.kind})
            out.artifacts.append(a)
    return out


def approval_message(ev: TaskEvent, task: Task) -> a2a.Message:
    ap = ev.approval
    text = ev.text or (f"approve {ap.tool}? {ap.summary}" if ap else "approval needed")
    msg = _text_message(text, task, suffix=f"approval-{ev.seq}")
    if ap is not None:
        msg.metadata.update(
            {
                "request_id": ap.request_id,
                "tool": ap.tool,
                "arguments": ap.arguments_json,
                "answer": "reply with 'approve', 'reject', or feedback text",
            }
        )
    return msg


def approval_answer(req: a2a.SendMessageRequest) -> tuple[str, str]:
    """(decision, feedback) from the message answering an INPUT_REQUIRED task: metadata
    ``decision`` or the text itself (approve/yes, reject/no; other text is feedback)."""
    meta = _struct(req.message.metadata if req.message.HasField("metadata") else None)
    text = message_text(req.message).strip()
    decision = str(meta.get("decision", "") or "").lower()
    if decision:
        if decision not in ("approve", "reject", "approve_next", "feedback"):
            raise MappingError(f"message.metadata.decision: unknown decision {decision!r}")
        return decision, text
    word = APPROVAL_WORDS.get(text.lower())
    if word:
        return word, ""
    if not text:
        raise MappingError("message.parts: say 'approve', 'reject' or give feedback text")
    return "feedback", text


def stream_events(ev: TaskEvent, task: Task, appended: bool) -> list[object]:
    """The A2A stream events of one mesh event (``appended``: output tokens were sent already)."""
    ctx = task.session_id
    if ev.kind == EventKind.TOKEN:
        art = a2a.TaskArtifactUpdateEvent(
            task_id=task.task_id, context_id=ctx, append=appended, artifact=output_artifact(ev.text)
        )
        return [art]
    if ev.kind == EventKind.APPROVAL:
        st = a2a.TaskStatus(state=a2a.TASK_STATE_INPUT_REQUIRED, message=approval_message(ev, task))
        return [a2a.TaskStatusUpdateEvent(task_id=task.task_id, context_id=ctx, status=st)]
    if ev.kind == EventKind.STATUS and ev.state is not None:
        if ev.state.terminal:
            return []  # the RESULT event ends the stream
        st = a2a.TaskStatus(state=a2a_state(ev.state))
        if ev.text:
            st.message.CopyFrom(_text_message(ev.text, task, suffix=f"ev-{ev.seq}"))
        return [a2a.TaskStatusUpdateEvent(task_id=task.task_id, context_id=ctx, status=st)]
    if ev.kind in (EventKind.LOG, EventKind.STEP) and ev.text:
        st = a2a.TaskStatus(
            state=a2a.TASK_STATE_WORKING,
            message=_text_message(ev.text, task, suffix=f"ev-{ev.seq}"),
        )
        return [a2a.TaskStatusUpdateEvent(task_id=task.task_id, context_id=ctx, status=st)]
    if ev.kind == EventKind.ARTIFACT and ev.artifact is not None:
        ref = ev.artifact
        a = a2a.Artifact(
            artifact_id=f"file:{ref.path}",
            name=ref.path,
            parts=[a2a.Part(text=ref.path, filename=ref.path.rsplit("/", 1)[-1])],
        )
        a.metadata.update({"path": ref.path, "size": ref.size, "kind": ref.kind})
        return [a2a.TaskArtifactUpdateEvent(task_id=task.task_id, context_id=ctx, artifact=a)]
    if ev.kind == EventKind.RESULT and ev.result is not None:
        r = ev.result
        out: list[object] = []
        if r.output and not appended:  # streamed as tokens already: the deltas are the output
            out.append(
                a2a.TaskArtifactUpdateEvent(
                    task_id=task.task_id,
                    context_id=ctx,
                    artifact=output_artifact(r.output),
                    last_chunk=True,
                )
            )
        st = a2a.TaskStatus(state=a2a_state(r.state))
        if r.error:
            st.message.CopyFrom(_text_message(r.error, task, suffix="final"))
        st.timestamp.GetCurrentTime()
        out.append(a2a.TaskStatusUpdateEvent(task_id=task.task_id, context_id=ctx, status=st))
        return out
    return []


# ---------------------------------------------------------------- agent cards
@functools.lru_cache(maxsize=64)
def builtin_description(agent_type: str) -> str:
    """The first line of a built-in agent module's docstring (read, not imported)."""
    try:
        # found, not imported: the daemon does not import the agent package
        spec = importlib.util.find_spec("agentd")
        if spec is None or not spec.submodule_search_locations:
            return ""
        module = Path(next(iter(spec.submodule_search_locations))) / "agents" / f"{agent_type}.py"
        doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    except Exception:
        return ""
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ")


def agent_card(
    agent_type: str,
    base_url: str,
    agents: Iterable[AgentInfo],
    version: str,
    grpc_address: str = "",
) -> a2a.AgentCard:
    """The card of one agent type: its interfaces are the JSON-RPC endpoint at BASE/TYPE (when
    ``base_url``) and the gRPC A2AService at ``grpc_address`` (when given), both with the type as
    tenant; mutual TLS is its one security requirement."""
    agents = list(agents)
    interfaces = []
    if base_url:
        interfaces.append(
            a2a.AgentInterface(
                url=f"{base_url}/{agent_type}",
                protocol_binding="JSONRPC",
                tenant=agent_type,
                protocol_version=PROTOCOL_VERSION,
            )
        )
    if grpc_address:
        interfaces.append(
            a2a.AgentInterface(
                url=grpc_address,
                protocol_binding="GRPC",
                tenant=agent_type,
                protocol_version=PROTOCOL_VERSION,
            )
        )
    caps = sorted({c for a in agents for c in a.capabilities})
    desc = builtin_description(agent_type) or f"the {agent_type} agents of an orchgpt mesh"
    card = a2a.AgentCard(
        name=agent_type,
        description=desc,
        version=version,
        supported_interfaces=interfaces,
        capabilities=a2a.AgentCapabilities(streaming=True, push_notifications=False, extended_agent_card=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    card.provider.organization = "orchgpt mesh"
    card.provider.url = base_url or f"grpc://{grpc_address}"
    card.security_schemes[
        MTLS_SCHEME
    ].mtls_security_scheme.description = "a client certificate signed by the mesh CA; its identity owns the tasks"
    req = card.security_requirements.add()
    req.schemes[MTLS_SCHEME].SetInParent()
    for act in (Action.RUN, Action.CREATE):
        card.skills.append(
            a2a.AgentSkill(
                id=f"{agent_type}.{act.value}",
                name=f"{agent_type} {act.value}",
                description=f"{act.value} a task on a {agent_type} agent: {desc}"
                + (" (metadata.action='create')" if act == Action.CREATE else ""),
                tags=list(dict.fromkeys([agent_type, act.value, *caps])),
            )
        )
    return card
