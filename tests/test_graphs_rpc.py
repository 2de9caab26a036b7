"""The graph RPCs on a real daemon: create (validated, versioned), list, get, delete, owner-
scoped; ListBlocks with JSON Schemas; refusals with the right status and a detail naming the
node and pin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchgpt.errors import ClientError
from tests.support.mesh import Daemon, issue

pytestmark = pytest.mark.timeout(90)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "echo-pipeline.json"


async def _code(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        await call
    return str(e.value.code), str(e.value)


def test_graph_rpcs(daemon: Daemon) -> None:
    issue(daemon.certs, "bob", "client")
    issue(daemon.certs, "ops", "agent")
    text = EXAMPLE.read_text()

    async def go() -> None:
        async with (
            daemon.client() as me,
            daemon.client("bob") as bob,
            daemon.client("ops") as agent,
        ):
            rec, created = await me.create_graph(text)
            assert created and rec.version == 1 and rec.owner == "client:cli" and rec.name == "echo-pipeline"
            same, created = await me.create_graph(text, graph_id=rec.graph_id)
            assert not created and same.version == 1  # unchanged: no new version
            changed = json.loads(text)
            changed["nodes"][0]["input"]["template"] = "bye {{who}}, order 7"
            v2, created = await me.create_graph(json.dumps(changed), graph_id=rec.graph_id)
            assert created and v2.version == 2 and v2.graph_id == rec.graph_id
            got = await me.get_graph(rec.graph_id)
            assert got.version == 2 and got.versions == 2 and "bye {{who}}" in got.definition
            assert "hello {{who}}" in (await me.get_graph(rec.graph_id, 1)).definition
            [listed] = await me.list_graphs()
            assert listed.graph_id == rec.graph_id and listed.version == 2 and listed.definition == ""
            # another client sees none of it and cannot take the id
            assert await bob.list_graphs() == []
            assert (await _code(bob.get_graph(rec.graph_id)))[0] == "NOT_FOUND"
            assert (await _code(bob.delete_graph(rec.graph_id)))[0] == "NOT_FOUND"
            assert (await _code(bob.create_graph(text, graph_id=rec.graph_id)))[0] == "ALREADY_EXISTS"
            # validation: INVALID_ARGUMENT naming node and pin
            bad = json.loads(text)
            bad["nodes"][2]["input"] = {}
            bad["links"].pop()
            code, msg = await _code(me.create_graph(json.dumps(bad)))
            assert code == "INVALID_ARGUMENT" and "node 'find': required input pin 'text'" in msg
            bad = json.loads(text)
            bad["nodes"][1]["block"] = "nope"
            code, msg = await _code(me.create_graph(json.dumps(bad)))
            assert code == "INVALID_ARGUMENT" and "node 'say': unknown block 'nope'" in msg
            code, msg = await _code(me.create_graph("{not json"))
            assert code == "INVALID_ARGUMENT" and "not a JSON graph" in msg
            # blocks with their schemas, for any client (and agents)
            blocks = {b["id"]: b for b in await bob.list_blocks()}
            assert {"agent", "text.template", "text.match", "calculator"} <= set(blocks)
            assert blocks["text.match"]["input_schema"]["required"] == ["text", "pattern"]
            assert len(await agent.list_blocks()) == len(blocks)
            assert (await _code(agent.create_graph(text)))[0] == "PERMISSION_DENIED"
            # delete: every version gone
            assert await me.delete_graph(rec.graph_id) == 2
            assert (await _code(me.get_graph(rec.graph_id)))[0] == "NOT_FOUND"
            assert await me.list_graphs() == []

    asyncio.run(go())
