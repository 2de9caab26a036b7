"""Tokens: deltas/s from many streaming agents (64 by default) to one watching client, and the
delay of each delta from its agent to the watcher.

    python -m bench.tokens emitters --mode M --target HOST:PORT --certs DIR --prefix tk- --agents 64 \
        --rate 50000 --seconds 4
    python -m bench.tokens watcher  --mode M --target HOST:PORT --certs DIR --name cli --expect N

How a delay is measured. Every delta's text is the CLOCK_MONOTONIC time (ns, the same clock in
every process of the machine) at which it was *due* by the emitters' schedule, then ";". With a
``--rate`` the emitters are paced (open loop): each stream owes ``rate / streams`` deltas a
second from its start, a pacer wakes every 2 ms and sends what each stream owes; the deltas due
since the last wake-up carry the time the oldest of them was due. So a delay counts the
emitters' own lateness (a send queue that was full, the 2 ms tick) as well as the router and the
watcher: it can only be over-, never under-stated. Without a rate (``--rate 0``) every stream
sends as fast as its send queue takes it, 64 deltas per timestamp: the figure is the ceiling
and the delays are mostly queueing.

In orchgpt mode the emitters send as agentd does (bench/tokens_fold.py: the same
``TokenOutbox``): a stream's deltas are folded into one event while it waits to be sent, and a
fast stream's writer is woken at most once per linger (20 ms); ``--no-fold``: one envelope per
delta, as an agent written to the protocol alone may send them. Every delta still carries its
own due time: folding, like the linger it waits for, counts in its delay.

The watcher splits a token event's text at ";" into its deltas: an agent folds them (above),
and orchgpt coalesces the deltas of a task for a watcher that is behind
(orchgpt/wire/coalesce.py); either way one event holds data["seq_from"]..seq with the texts
concatenated, and a delta's delay runs to the arrival of the event that holds it. The number of
timestamps must equal ``deltas(event)``, and each task's events must follow each other (seq
``last + 1`` on: every delta once, in order): both checked, reported as ``inconsistent``. The rate
is the deltas received in a window that opens ``--warmup`` seconds after the first and lasts
``--duration``; the delays are those of the deltas received in it. A watch stream that ends
before every delta arrived is the failure "watcher dropped" (its status is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchgpt.certs import paths_for
from orchgpt.iac.v1 import iac_pb2 as pb
from orchgpt.wire.coalesce import deltas
from orchgpt.wire.token_fold import LINGER_S

from . import placement, wire
from .childio import Commands, emit, run_child
from .children import Children
from .procstat import cpu_seconds
from .routing import Router
from .stats import percentile
from .tokens_fold import FoldingLink

TICK_S = 0.002
BURST = 64  # unpaced: deltas sent per timestamp


@dataclass
class _Stream:
    link: wire.Link
    task_id: str
    correlation_id: str
    t0: int = 0
    sent: int = 0


async def _finish(s: _Stream) -> None:
    if s.correlation_id:  # orchgpt: the task ends
        result = pb.TaskResult(task_id=s.task_id, state=pb.SUCCEEDED, output="ok", agent_id=s.link.agent_id)
        await s.link.send(
            pb.Envelope(
                id=wire.next_id(),
                sender=s.link.name,
                type=pb.REPLY,
                task_id=s.task_id,
                correlation_id=s.correlation_id,
                reply=pb.Reply(result=result),
            )
        )


def _token_env(s: _Stream, text: str) -> pb.Envelope:
    """A new envelope per delta: a queued one may be folded into (or sent later than) the next."""
    ev = pb.TaskEvent(task_id=s.task_id, token=pb.TokenEvent(text=text), agent_id=s.link.agent_id)
    return pb.Envelope(id=wire.next_id(), sender=s.link.name, type=pb.TASK_EVENT, task_id=s.task_id, event=ev)


async def _send_delta(s: _Stream, text: str) -> None:
    lk = s.link
    if isinstance(lk, FoldingLink):  # as agentd's Link.emit: an envelope only when not folded
        await lk.send_delta(s.task_id, text, lambda: _token_env(s, text))
    else:
        await lk.send(_token_env(s, text))


async def _unpaced(s: _Stream, per_stream: int) -> None:
    while s.sent < per_stream:
        k = min(BURST, per_stream - s.sent)
        text = f"{time.monotonic_ns()};"
        for _ in range(k):
            await _send_delta(s, text)
        s.sent += k
    await _finish(s)


class _Pacer:
    """One loop for every stream of the process: every TICK_S, each stream sends what it owes."""

    def __init__(self, per_stream_rate: float, per_stream: int) -> None:
        self.rate = per_stream_rate
        self.per_stream = per_stream
        self.streams: list[_Stream] = []
        self.late_max_s = 0.0  # the most any stream owed, in seconds of its schedule

    def add(self, s: _Stream) -> None:
        s.t0 = time.monotonic_ns()
        self.streams.append(s)

    async def run(self, stop: asyncio.Event) -> None:
        ns_per = 1e9 / self.rate
        while not (stop.is_set() and not self.streams):
            now = time.monotonic_ns()
            done = []
            for s in self.streams:
                due = min(self.per_stream, int((now - s.t0) / ns_per))
                k = due - s.sent
                if k <= 0:
                    continue
                oldest = s.t0 + int((s.sent + 1) * ns_per)  # when the first of these was due
                self.late_max_s = max(self.late_max_s, (now - oldest) / 1e9)
                text = f"{oldest};"
                for _ in range(k):
                    await _send_delta(s, text)
                s.sent = due
                if due >= self.per_stream:
                    done.append(s)
            for s in done:
                await _finish(s)
            if done:
                self.streams = [s for s in self.streams if s not in done]
            await asyncio.sleep(TICK_S)


async def emitters(args: argparse.Namespace) -> None:
    commands = Commands()
    names = [f"{args.prefix}{i}" for i in range(args.agents)]
    fold = args.mode == wire.ORCHGPT and not args.no_fold  # as agentd sends them (bench/tokens_fold.py)

    def link(n: str) -> wire.Link:
        ch = wire.open_channel(args.target, paths_for(Path(args.certs), n))
        if not fold:
            return wire.Link(ch, args.mode, n)
        top = args.linger_max_ms / 1000 if args.linger_max_ms is not None else None
        return FoldingLink(ch, n, linger_s=args.linger_ms / 1000, linger_max_s=top)

    links = [link(n) for n in names]
    await asyncio.gather(*(lk.register(agent_type=args.agent_type) for lk in links))
    emit("ready", agent_ids=[lk.agent_id for lk in links])
    per_stream = int(args.per_stream)
    pacer = _Pacer(args.rate / args.agents, per_stream) if args.rate > 0 else None
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    own = {"t": 0.0, "cpu": 0.0}

    streams: list[_Stream] = []

    def start(s: _Stream) -> None:
        streams.append(s)
        if not own["t"]:
            own.update(t=time.perf_counter(), cpu=time.process_time())
        if pacer is not None:
            pacer.add(s)
        else:
            t = asyncio.create_task(_unpaced(s, per_stream))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    async def on_runs(link: wire.Link) -> None:
        while True:
            for env in await link.recv():
                if env.type == pb.RUN:
                    start(_Stream(link, env.task.task_id or env.task_id, env.id))

    runners: list[asyncio.Task[Any]] = []
    if pacer is not None:
        runners.append(asyncio.create_task(pacer.run(stop)))
    try:
        if args.mode == wire.ORCHGPT:
            runners += [asyncio.create_task(on_runs(lk)) for lk in links]
        else:
            await commands.expect("go", 120)
            for lk in links:
                start(_Stream(lk, f"task-{lk.name}", ""))
        await commands.expect("report", args.cap)
        wall = time.perf_counter() - own["t"] if own["t"] else 0.0
        emit(
            "report",
            late_max_s=pacer.late_max_s if pacer else None,
            emitters_cpu_pct=(time.process_time() - own["cpu"]) / wall * 100 if wall else None,
            fold=fold,
            linger_ms=args.linger_ms if fold else None,
            linger_max_ms=links[0].box.linger_max * 1000 if fold and isinstance(links[0], FoldingLink) else None,
            frames_out=sum(lk.frames_out for lk in links),
            sent=sum(s.sent for s in streams),
        )
        await commands.closed.wait()
    finally:
        stop.set()
        for t in (*runners, *tasks):
            t.cancel()
        await asyncio.gather(*(lk.close() for lk in links))


async def watcher(args: argparse.Namespace) -> None:
    commands = Commands()
    channel = wire.open_channel(args.target, paths_for(Path(args.certs), args.name))
    call = wire.watch_call(channel, args.mode)
    await asyncio.wait([asyncio.create_task(call.wait_for_connection())], timeout=1.0)
    await asyncio.sleep(0.3)  # the subscription settles on the router
    emit("ready")
    batching = args.mode == wire.ORCHGPT
    delays: list[float] = []
    st = {"n": 0, "first": 0, "ws": 0, "we": 0, "n_ws": 0, "n_we": 0, "events": 0, "cpu_ws": 0.0, "cpu_we": 0.0}
    st["frames"] = 0  # frames received in the window
    last_seq: dict[str, int] = {}
    bad: list[str] = []
    router = args.router_pid
    own_ws, own_we = [0.0], [0.0]  # the watcher's own CPU time at the window's ends
    warm, dur = int(args.warmup * 1e9), int(args.duration * 1e9)

    async def count() -> None:
        while st["n"] < args.expect:
            msg = await call.read()
            if msg is wire.grpc.aio.EOF:
                code = await call.code()
                details = await call.details()
                raise RuntimeError(f"watcher dropped: the router ended the watch stream ({code.name}: {details})")
            now = time.monotonic_ns()
            if st["ws"] and not st["we"]:
                st["frames"] += 1
            for e in msg.envelopes if batching else (msg,):
                if batching:  # orchgpt numbers each task's events: every delta once, in order
                    seq, first = e.event.seq, e.event.seq - deltas(e.event) + 1
                    last = last_seq.get(e.event.task_id)
                    if last is not None and first != last + 1 and len(bad) < 5:
                        bad.append(f"task {e.event.task_id}: seq {first}..{seq} after {last}")
                    last_seq[e.event.task_id] = seq
                if not e.event.HasField("token"):
                    continue
                stamps = e.event.token.text.split(";")[:-1]
                if len(stamps) != deltas(e.event) and len(bad) < 5:
                    bad.append(f"{len(stamps)} timestamps in an event of {deltas(e.event)} deltas")
                if st["n"] == 0:
                    st["first"] = now
                elif not st["ws"] and now - st["first"] >= warm:
                    st.update(ws=now, n_ws=st["n"], cpu_ws=cpu_seconds(router) if router else 0.0)
                    own_ws[0] = time.process_time()
                if st["ws"] and not st["we"]:
                    if now - st["ws"] >= dur:
                        st.update(we=now, n_we=st["n"], cpu_we=cpu_seconds(router) if router else 0.0)
                        own_we[0] = time.process_time()
                        if args.stop_after_window:
                            return
                    else:
                        delays.extend((now - int(t)) / 1e6 for t in stamps)
                        st["events"] += 1
                st["n"] += len(stamps)

    task = asyncio.create_task(count())
    done, _ = await asyncio.wait([task], timeout=args.cap_events)
    if task in done:
        task.result()
    else:
        task.cancel()
    end = time.monotonic_ns()
    if not st["ws"]:
        raise RuntimeError(f"the watcher received {st['n']} deltas, not enough for a window (warm-up {args.warmup}s)")
    if not st["we"]:  # the deltas ended within the window
        st.update(we=end, n_we=st["n"], cpu_we=cpu_seconds(router) if router else 0.0)
        own_we[0] = time.process_time()
    n_win, span = st["n_we"] - st["n_ws"], (st["we"] - st["ws"]) / 1e9
    emit(
        "result",
        received=st["n"],
        expected=args.expect,
        complete=st["n"] >= args.expect,
        stopped_after_window=bool(args.stop_after_window and st["n"] < args.expect),
        deltas=n_win,
        seconds=span,
        dps=n_win / span if span else 0.0,
        events=st["events"],
        frames=st["frames"],
        deltas_per_event=len(delays) / st["events"] if st["events"] else None,
        p50_ms=percentile(delays, 50),
        p99_ms=percentile(delays, 99),
        max_ms=max(delays) if delays else None,
        router_cpu_us_per_delta=(st["cpu_we"] - st["cpu_ws"]) / n_win * 1e6 if router and n_win else None,
        router_cpu_pct=(st["cpu_we"] - st["cpu_ws"]) / span * 100 if router and span else None,
        watcher_cpu_pct=(own_we[0] - own_ws[0]) / span * 100 if span else None,
        inconsistent=bad,
    )
    call.cancel()
    await commands.expect("exit", 60)


# ---- the harness side
async def run(
    children: Children,
    router: Router,
    *,
    agents: int,
    rate: float,
    seconds: float,
    warmup: float,
    duration: float,
    prefix: str,
    start_tasks: Callable[[list[str]], Awaitable[None]] | None,
    tag: str = "",
    fold: bool = True,
    linger_ms: float | None = None,
    linger_max_ms: float | None = None,
) -> dict[str, Any]:
    """One run: ``agents`` emitters (one process), one watcher (another), both on the peer CPUs.
    Paced at ``rate`` deltas/s in all for ``seconds`` (or, rate 0, as many deltas as a task may
    have, as fast as they go: with folding, ``seconds`` × 20,000 all arrived within the warm-up).
    ``fold``: the emitters fold their deltas as agentd does (orchgpt only)."""
    # under orchgpt's default max-events-per-task (5,000)
    per_stream = min(int(rate * seconds / agents), 4500) if rate > 0 else 4500
    total = per_stream * agents
    cap = seconds * 4 + warmup + duration + 30
    common = ["--mode", router.mode, "--target", router.target, "--certs", str(router.certs)]
    name = f"{router.mode}{tag}"
    w = await children.python(
        f"{name}-tok-watcher",
        "bench.tokens",
        [
            *("watcher", *common, "--name", "cli", "--expect", str(total), "--cap-events", str(cap)),
            *("--warmup", str(warmup), "--duration", str(duration), "--router-pid", str(router.pid)),
            *(() if rate > 0 else ("--stop-after-window",)),  # the ceiling: no need to wait for the rest
        ],
        cpus=placement.PEER_CPUS,
    )
    await w.expect("ready", 30)
    e = await children.python(
        f"{name}-tok-emitters",
        "bench.tokens",
        [
            *("emitters", *common, "--prefix", prefix, "--agents", str(agents), "--rate", str(rate)),
            *("--per-stream", str(per_stream), "--cap", str(cap + 60)),
            *(() if fold else ("--no-fold",)),
            *(("--linger-ms", str(linger_ms)) if linger_ms is not None else ()),
            *(("--linger-max-ms", str(linger_max_ms)) if linger_max_ms is not None else ()),
        ],
        cpus=placement.PEER_CPUS,
    )
    ready = await e.expect("ready", 90)
    if start_tasks is None:
        await e.send(cmd="go")
    else:
        await start_tasks(ready["agent_ids"])
    result = await w.expect("result", cap + 30)
    await e.send(cmd="report")
    result.update(await e.expect("report", 10))
    result.pop("event", None)
    await w.send(cmd="exit")
    for child in (w, e):
        await child.stop()
    result.update(agents=agents, offered_rate=rate or None, per_stream=per_stream)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("emitters", "watcher"))
    ap.add_argument("--mode", choices=wire.MODES, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--name", default="cli")
    ap.add_argument("--prefix", default="bench-tk-")
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--agent-type", default="bench-tok")
    ap.add_argument("--rate", type=float, default=50_000.0, help="deltas/s in all (0: as fast as they go)")
    ap.add_argument("--per-stream", type=int, default=3000, help="deltas each stream sends")
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--cap-events", type=float, default=60.0)
    ap.add_argument("--router-pid", type=int, default=0)
    ap.add_argument("--stop-after-window", action="store_true", help="watcher: end with the window, not the deltas")
    ap.add_argument("--cap", type=float, default=300.0)
    ap.add_argument("--no-fold", action="store_true", help="emitters: one envelope per delta (not as agentd folds)")
    ap.add_argument("--linger-ms", type=float, default=LINGER_S * 1000, help="emitters: agentd's token linger")
    ap.add_argument("--linger-max-ms", type=float, help="emitters: the adaptive linger's bound (default: agentd's)")
    args = ap.parse_args()
    if not args.target.startswith("127.0.0.1:"):
        ap.error("benchmarks only talk to 127.0.0.1")
    run_child(lambda: (emitters if args.role == "emitters" else watcher)(args), args.cap)


if __name__ == "__main__":
    main()
