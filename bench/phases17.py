"""Issue 17's phases: the durable-queue baseline (RabbitMQ) and tokens from 64 agents.

- rabbitmq: a private RabbitMQ broker (bench/rabbit.py) with a durable queue and publisher
  confirms, messages/s at the same in-flight counts as the echo-task phase; it is the baseline
  of the durable echo-task rows. Not pinned, like the task phase (broker and client share both
  cores, as the daemon, its echo agent and the client do there).
- tokens: 64 streaming agents to one watcher at orchgpt's default settings (bench/tokens.py):
  as fast as they go (the ceiling), then paced at the target rate for the delay's p99; the
  relay pump with the same emitters and watcher is the baseline. Alternating, fresh routers.
"""

from __future__ import annotations

from typing import Any

from bench import daemon, pyspy, routing, tokens
from bench.children import Children
from bench.phases import Ctx, _log

TOK_PREFIX = "bench-tk-"


def token_cert_names(agents: int) -> list[str]:
    return [f"{TOK_PREFIX}{i}" for i in range(agents)]


async def phase_rabbitmq(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    async with Children(ctx.logs("rabbitmq")) as ch:
        c = await ch.python(
            "rabbit",
            "bench.rabbit",
            [
                *("--inflight", ",".join(map(str, p.tasks_inflight)), "--duration", str(p.rabbit_duration)),
                *("--work", str(ctx.work / "rabbitmq"), "--cap", "400"),
            ],
            cpus=None,
        )
        c.exits_on_eof = False  # it ends by itself once the broker is stopped; SIGTERM stops it too
        res = await c.expect("result", 420)
        res.pop("event", None)
        await c._exit_code(60)
    if res.get("missing"):
        _log(f"rabbitmq left out: {res['missing']}")
    else:
        _log(
            "rabbitmq: "
            + ", ".join(f"{r['inflight']} in flight {r['per_s']:.0f} msg/s" for r in res["results"])
            + " (closed loop: "
            + ", ".join(f"{r['per_s']:.0f}" for r in res["closed_loop"])
            + ")"
        )
    return res


async def _tokens_one(ctx: Ctx, i: int, mode: str, rate: float) -> dict[str, Any]:
    tag = f"-{i}-{'paced' if rate else 'max'}"
    async with Children(ctx.logs(f"tokens{tag}-{mode}")) as ch:
        if mode == "baseline":
            router = await routing.start_baseline(ch, ctx.certs)
            starter = None
        else:
            # every setting at its default, the per-agent rate and events-per-task limits too
            router, _ = await daemon.start_orchgpt(ch, ctx.certs, ctx.work / f"data-tokens{tag}", default_limits=True)
            starter = routing.task_starter(router)
        on = mode == "orchgpt" and bool(rate) and i == 0  # one paced run is profiled: the rows' "why"
        async with pyspy.profile_if(on, router.pid, ctx.work / f"profile-tokens{tag}.raw") as prof:
            res = await _tokens_run(ctx, ch, router, rate, starter, tag)
        if on:
            res["profile"] = prof.result()
        return res


async def _tokens_run(ctx: Ctx, ch: Children, router: Any, rate: float, starter: Any, tag: str) -> dict[str, Any]:
    p = ctx.profile
    return await tokens.run(
        ch,
        router,
        agents=p.tok_agents,
        rate=rate,
        seconds=p.tok_seconds,
        warmup=p.ev_warmup,
        duration=p.tok_duration,
        prefix=TOK_PREFIX,
        start_tasks=starter,
        tag=tag,
    )


async def phase_tokens(ctx: Ctx) -> dict[str, Any]:
    p = ctx.profile
    out: dict[str, Any] = {"max": [], "paced": [], "rate": p.tok_rate, "agents": p.tok_agents, "errors": []}
    for i in range(p.ev_rounds):
        for key, rate in (("max", 0.0), ("paced", p.tok_rate)):
            one: dict[str, Any] = {}
            for mode in ("baseline", "orchgpt") if i % 2 == 0 else ("orchgpt", "baseline"):
                try:
                    one[mode] = await _tokens_one(ctx, i, mode, rate)
                except Exception as exc:  # a dropped watcher is a result, not the end of the phase
                    one[mode] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                    out["errors"].append(f"{key} {mode}: {one[mode]['error']}")
            out[key].append(one)
            _log(
                f"tokens {key} round {i + 1}: "
                + ", ".join(
                    f"{m} {r['dps']:.0f}/s p99 {r['p99_ms']:.1f} ms" if "dps" in r else f"{m} {r['error'][:120]}"
                    for m, r in one.items()
                )
            )
    return out
