"""`orchgpt bridge ...` command line: `orchgpt bridge amqp`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

EPILOG = """\
environment: RABBITMQ_URL (or the seed's RABBITMQ_HOST: a host name or a URL),
RABBITMQ_CA_FILE, QUEUE_TO_RECEIVE_MESSAGE, QUEUE_TO_SEND_MESSAGE, ORCHGPT_ADDRESS,
ORCHGPT_CERTS. The bridge needs a client certificate of the mesh:
  orchgpt certs issue amqp-bridge --role client
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bridge", help="connect the mesh to another transport (amqp)")
    bsub = p.add_subparsers(dest="bridge_cmd", metavar="{amqp}", required=True)
    a = bsub.add_parser(
        "amqp",
        help="serve mesh agents to services over RabbitMQ queues",
        description="Services publish to the receive queue (a plain string, or JSON with content, agent, "
        'action, language, session_id, task_id) and read {"role", "content"} JSON answers on the send '
        "queue (or their reply_to). SIGTERM_FROM_SERVICE ends a conversation (answered SIGTERM_FROM_AUTOGPT).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "--url",
        help="amqp://user:pass@host:port/vhost or amqps://... (default: RABBITMQ_URL, RABBITMQ_HOST, amqp://localhost)",
    )
    a.add_argument(
        "--ca-file",
        dest="ca_file",
        default=os.environ.get("RABBITMQ_CA_FILE", ""),
        help="CA certificate for amqps:// (default: RABBITMQ_CA_FILE, else the system's)",
    )
    a.add_argument(
        "--agent",
        default="",
        metavar="TYPE",
        help="agent type for messages that name none (an 'agent' field or header overrides it)",
    )
    a.add_argument(
        "--receive-queue",
        dest="receive_queue",
        default=os.environ.get("QUEUE_TO_RECEIVE_MESSAGE") or "service-to-autogpt",
        help="queue the services publish to (default service-to-autogpt)",
    )
    a.add_argument(
        "--send-queue",
        dest="send_queue",
        default=os.environ.get("QUEUE_TO_SEND_MESSAGE") or "autogpt-to-service",
        help="queue the answers go to when a message has no reply_to (default autogpt-to-service)",
    )
    a.add_argument(
        "--dead-letter-queue",
        dest="dead_letter_queue",
        default="",
        help="where poison messages go, with the reason in the x-orchgpt-reason header "
        "(default RECEIVE_QUEUE.dead-letter)",
    )
    a.add_argument(
        "--classic-queues",
        dest="classic_queues",
        action="store_true",
        help="declare durable classic queues instead of quorum queues",
    )
    a.add_argument("--prefetch", type=int, default=200, help="messages handled at once (default 200)")
    a.add_argument(
        "--max-redeliveries",
        dest="max_redeliveries",
        type=int,
        default=5,
        help="a message redelivered more often goes to the dead-letter queue (default 5)",
    )
    a.add_argument("--approval", action="store_true", help="ask the service (USER_INPUT) before the agent runs a tool")
    a.add_argument("--address", help="orchgpt HOST:PORT (default: ORCHGPT_ADDRESS or 127.0.0.1:8443)")
    a.add_argument("--certs", help="certificate directory with ca.pem and the client certificate (default ./certs)")
    a.add_argument(
        "--cert-name",
        dest="cert_name",
        default="amqp-bridge",
        help="client certificate name in --certs: NAME.pem, NAME-key.pem (default amqp-bridge)",
    )
    a.add_argument("--log-level", dest="log_level", default="info", choices=["debug", "info", "warning", "error"])
    a.add_argument("--log-format", dest="log_format", default="json", choices=["json", "console"])


def run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..client import MeshClient, resolve_address, resolve_certs
    from ..errors import ClientError, ConfigError
    from .amqp import AmqpBridge, BridgeConfig
    from .amqp_wire import resolve_url

    logs.configure(args.log_level, args.log_format, service="orchgpt-bridge")
    log = logs.get("orchgpt.bridge")
    if args.prefetch < 1 or args.max_redeliveries < 0:
        raise ConfigError("--prefetch must be at least 1 and --max-redeliveries at least 0")
    cfg = BridgeConfig(
        url=resolve_url(args.url, dict(os.environ)),
        agent=args.agent.strip().lower(),
        receive_queue=args.receive_queue,
        send_queue=args.send_queue,
        dead_letter_queue=args.dead_letter_queue,
        classic_queues=args.classic_queues,
        prefetch=args.prefetch,
        max_redeliveries=args.max_redeliveries,
        ca_file=args.ca_file,
        approval=args.approval,
    )
    certs = resolve_certs(args.certs, name=args.cert_name)
    for path in (certs.ca, certs.cert, certs.key):
        if not path.exists():
            raise ConfigError(
                f"{path} does not exist: the bridge needs the mesh CA and a client certificate "
                f"(orchgpt certs issue {args.cert_name} --role client)"
            )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        mesh = MeshClient(resolve_address(args.address), certs, name=args.cert_name, timeout=15)
        try:
            try:
                await mesh.check()
            except ClientError as exc:
                log.warning("mesh_unavailable", error=str(exc), note="will retry per message")
            await AmqpBridge(cfg, mesh).run(stop)
        finally:
            await mesh.close()
        log.info("bridge_stopped")

    asyncio.run(main())
    return 0
