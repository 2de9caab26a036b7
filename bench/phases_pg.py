"""Issue 17's durable echo tasks on the PostgreSQL store (phase ``tasks_pg``).

The same measurement as the ``tasks`` phase (bench/phases.py: create, assign, run, result
stored, 1 and 64 in flight, daemon CPU per task), with the daemon on a throwaway PostgreSQL
server (bench/pg.py, fsync on) started for the phase and stopped in ``finally``. Its baseline
is the RabbitMQ phase of the same run, as for the SQLite rows. The server's processes' CPU
(postmaster and backends, from /proc) is read around each in-flight count: "PostgreSQL CPU
per task" (it includes the task client's start and its one warm-up task: a client is started
for each in-flight count, so that the window holds that count alone).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import daemon, pg, placement, pyspy, startup
from bench.children import Children
from bench.phases import Ctx, _log


async def phase_tasks_pg(ctx: Ctx) -> dict[str, Any]:
    why = pg.unavailable()
    if why:
        _log(f"tasks_pg left out: {why}")
        return {"missing": why, "results": []}
    p = ctx.profile
    server = await pg.start()
    try:
        url = await asyncio.to_thread(server.new_database, "bench")
        out: list[dict[str, Any]] = []
        async with Children(ctx.logs("tasks_pg")) as ch:
            orch, _ = await daemon.start_orchgpt(
                ch,
                ctx.certs,
                ctx.work / "data-tasks-pg",
                spawn=True,
                cpus=None,
                extra=[
                    "--store",
                    url,
                    "--max-local-agents",
                    str(p.tasks_agents),
                    "--local-agent-concurrency",
                    str(p.tasks_concurrency),
                ],
            )
            for n in p.tasks_inflight:
                before = pg.cpu_seconds(server)
                top = n == max(p.tasks_inflight)  # profiled: the rows' "why"
                async with pyspy.profile_if(top, orch.pid, ctx.work / "profile-tasks-pg.raw") as prof:
                    (res,) = await startup.task_overhead(
                        ch, orch.target, orch.pid, ctx.certs, p.tasks_count, [n], placement.PEER_CPUS
                    )
                if top:
                    res["profile"] = prof.result()
                used = pg.cpu_between(before, pg.cpu_seconds(server))
                res["pg_cpu_us_per_task"] = used / max(1, int(res.get("tasks", p.tasks_count))) * 1e6
                out.append(res)
    finally:
        await pg.stop(server)
    _log(
        "tasks on PostgreSQL: "
        + ", ".join(
            f"{r['inflight']} in flight {r['tasks_per_s']:.0f}/s, PostgreSQL CPU {r['pg_cpu_us_per_task']:.0f} µs/task"
            for r in out
        )
    )
    return {"results": out, "server_dir": str(server.dir)}
