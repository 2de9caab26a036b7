"""Agent-to-agent envelopes crossing the daemons of a cluster (issue 19, docs/scaling.md): the
transport's side of cluster_messages.py. An envelope for an agent connected to another daemon
is stored for that daemon (serialized, unchanged); the daemon of the recipient hands it to
the agent's link. A COMMAND that arrives this way is remembered here (authz.OpenCommands)
like one from an agent of this daemon, so that its REPLY passes the same pairing rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from . import logs
from .authz_decision import DAEMON
from .errors import StoreError
from .iac.v1 import iac_pb2 as pb
from .wire.codec_basics import new_envelope

if TYPE_CHECKING:
    from .authz import OpenCommands
    from .mesh import Mesh

log = logs.get("orchgpt.servicer")


def to_agent(mesh: Mesh, env: pb.Envelope, agent_id: str, paired: bool = False) -> bool:
    """``env`` for ``agent_id`` connected to another daemon: stored for it, True; False when
    no daemon of the cluster has that agent (or there is no cluster). ``paired``: a REPLY that
    answers an open COMMAND of ``agent_id``: stored for it even when the registry does not
    list it yet (an agent that registered less than a tick ago on its daemon is not in
    ``cluster_agents`` yet; its daemon takes the row when the agent is there)."""
    c = mesh.cluster
    if c is None or not (paired or c.agent_elsewhere(agent_id)):
        return False
    return _send(mesh, env, [agent_id])


def to_type(mesh: Mesh, env: pb.Envelope, agent_type: str, idle_only: bool = False) -> str:
    """``env`` for an agent of ``agent_type`` on another daemon (``idle_only``: an idle one):
    the agent it went to, or ""."""
    c = mesh.cluster
    dest = c.pick_remote(agent_type, hash(env.id), idle_only) if c is not None else ""
    return dest if dest and _send(mesh, env, [dest]) else ""


def to_all(mesh: Mesh, env: pb.Envelope, sender: str) -> None:
    """A broadcast: every agent of the other daemons gets it as well."""
    c = mesh.cluster
    if c is not None:
        _send(mesh, env, c.remote_agent_ids(but=sender))


def _send(mesh: Mesh, env: pb.Envelope, agent_ids: list[str]) -> bool:
    try:
        mesh.cluster.send_envelope(agent_ids, env.SerializeToString())
    except StoreError as exc:
        log.warning("cluster_forward_failed", to=agent_ids[:5], error=str(exc))
        return False
    return True


def bouncer(mesh: Mesh) -> Callable[[str, bytes], None]:
    """The cluster's ``on_expired``: an envelope for ``agent_id`` that no daemon delivered in
    time (the agent never came back): its sender gets an ERROR (UNAVAILABLE, naming the agent
    and the envelope, ``correlation_id`` its id: an agentd ask fails with it), here or on the
    daemon it is connected to. An ERROR or a BROADCAST is not bounced (no ping-pong)."""

    def bounce(agent_id: str, data: bytes) -> None:
        env = pb.Envelope()
        try:
            env.ParseFromString(data)
        except DecodeError as exc:
            log.warning("cluster_bad_envelope", agent_id=agent_id, error=str(exc))
            return
        if env.type in (pb.ERROR, pb.BROADCAST) or not env.sender or env.sender == DAEMON:
            return
        ttl = mesh.cluster.message_ttl_ms / 1000
        err = new_envelope(
            pb.ERROR,
            DAEMON,
            correlation_id=env.id,
            to_agent=env.sender,
            error=pb.Error(
                code="UNAVAILABLE",
                message=f"agent {agent_id!r} did not take the {pb.MessageType.Name(env.type)} {env.id} "
                f"within {ttl:g} s (it left its daemon and did not come back); not delivered",
            ),
        )
        log.warning("cluster_message_bounced", agent_id=agent_id, sender=env.sender, envelope=env.id)
        link = mesh.link_of(env.sender)
        if link is not None:
            link.forward(err)
        elif mesh.cluster.agent_elsewhere(env.sender):
            _send(mesh, err, [env.sender])

    return bounce


def deliverer(mesh: Mesh, commands: OpenCommands) -> Callable[[str, bytes], None]:
    """The cluster's ``on_envelope``: an envelope from an agent of another daemon, for
    ``agent_id`` connected here."""

    def deliver(agent_id: str, data: bytes) -> None:
        env = pb.Envelope()
        try:
            env.ParseFromString(data)
        except DecodeError as exc:  # (another daemon wrote it: a version mismatch, a bug)
            log.warning("cluster_bad_envelope", agent_id=agent_id, error=str(exc))
            return
        link = mesh.link_of(agent_id)
        if link is None:
            return
        if env.type == pb.COMMAND and not env.correlation_id:  # its REPLY comes back through here
            commands.opened(env.id, env.sender, agent_id)
        link.forward(env)

    return deliver
