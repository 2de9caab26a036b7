"""Graph files (JSON and TOML) and validation before anything runs: each problem names the
node and the pin."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agentd.blocks import catalog
from orchgpt.graphs.model import GraphError, parse_graph
from orchgpt.graphs.pins import get_part, set_part
from orchgpt.graphs.validate import validate

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "echo-pipeline.json"
CATALOG = {e["id"]: e for e in catalog()}


def _graph() -> dict[str, Any]:
    return dict(json.loads(EXAMPLE.read_text()))


def _problem(d: dict[str, Any]) -> str:
    with pytest.raises(GraphError) as e:
        validate(parse_graph(json.dumps(d)), CATALOG)
    assert e.value.code == "INVALID_ARGUMENT"
    return str(e.value)


def test_the_example_is_valid_and_round_trips() -> None:
    g = parse_graph(EXAMPLE.read_text())
    validate(g, CATALOG)
    assert list(g.nodes) == ["greet", "say", "find"]
    again = parse_graph(json.dumps(g.definition()))
    assert again.canonical() == g.canonical()


def test_toml_graph() -> None:
    text = """
name = "calc"
[[nodes]]
id = "c"
block = "calculator"
input = { expression = "1 + x" }
[inputs.x]
to = "c.variables.x"
[outputs]
result = "c.result"
"""
    g = parse_graph(text)
    validate(g, CATALOG)
    assert g.nodes["c"].block_id == "calculator" and g.outputs == {"result": ("c", "result")}


def test_unknown_block() -> None:
    d = _graph()
    d["nodes"][1]["block"] = "no.such"
    assert _problem(d) == "node 'say': unknown block 'no.such'"


def test_missing_required_input() -> None:
    d = _graph()
    d["nodes"][1]["input"] = {}
    assert _problem(d) == (
        "node 'say': required input pin 'agent_type' has no value (no constant, link or graph input)"
    )


def test_unknown_pins_are_named() -> None:
    d = _graph()
    d["links"][0]["from"] = "greet.txt"
    assert "link greet.txt -> say.input: node 'greet' (block text.template) has no output pin 'txt'" in _problem(d)
    d = _graph()
    d["nodes"][0]["input"]["nope"] = 1
    assert _problem(d).startswith("node 'greet': input pin 'nope': block text.template has no such input")
    d = _graph()
    d["links"][0]["to"] = "ghost.input"
    assert "no node 'ghost'" in _problem(d)


def test_type_mismatch_along_a_link() -> None:
    d = _graph()
    d["nodes"].append({"id": "calc", "block": "calculator", "input": {"expression": "1"}})
    d["links"].append({"from": "greet.text", "to": "calc.variables"})
    assert _problem(d) == (
        "link greet.text -> calc.variables: type mismatch: output pin 'text' of "
        "node 'greet' is string, input pin 'variables' of node 'calc' expects object"
    )


def test_a_cycle_that_is_not_a_declared_loop() -> None:
    d = _graph()
    d["links"].append({"from": "find.positive", "to": "greet.template"})
    assert "nodes greet -> say -> find -> greet form a cycle that is not a declared loop" in _problem(d)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("nodes"), "nodes: a graph needs a list of at least one node"),
        (
            lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])),
            "node 'greet': the id is used twice",
        ),
        (
            lambda d: d["links"].append({"from": "greet", "to": "say.input"}),
            "links[2].from: 'greet' is not NODE.PIN",
        ),
    ],
)
def test_malformed_files(mutate: Any, expected: str) -> None:
    d = _graph()
    mutate(d)
    with pytest.raises(GraphError, match="^" + expected.replace(".", r"\.").replace("[", r"\[")):
        parse_graph(json.dumps(d))


def test_pins_address_parts_of_values() -> None:
    assert get_part({"a": [1, {"b": 2}]}, ["a", "1", "b"]) == 2
    inputs: dict[str, Any] = {"values": {"x": 1}}
    set_part(inputs, "values.who", "me")
    set_part(inputs, "items", [0])
    assert inputs == {"values": {"x": 1, "who": "me"}, "items": [0]}


def test_declared_loops() -> None:
    d = _graph()
    d["links"].append({"from": "find.positive", "to": "greet.template", "loop": True})
    g = parse_graph(json.dumps(d))
    validate(g, CATALOG)  # a declared loop: no cycle error
    assert '"loop":true' in g.canonical() and '"loop"' not in parse_graph(EXAMPLE.read_text()).canonical()
    d["links"][-1] = {"from": "greet.text", "to": "find.pattern", "loop": True}
    assert "declared a loop, but node 'find' does not lead to node 'greet'" in _problem(d)
    d["links"][-1] = {"from": "say.result", "to": "find.text", "loop": "yes"}
    with pytest.raises(GraphError, match=r"links\[2\]\.loop: true or false"):
        parse_graph(json.dumps(d))
