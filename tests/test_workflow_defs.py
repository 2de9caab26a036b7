"""Workflow definitions: the issue's smallest file loads as written, bad files are refused with
the file, the key and the problem named, the examples load, and the daemon resolves a name to its
definition at submit time (a client cannot bring its own)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchgpt.errors import RoutingError
from orchgpt.models import Command
from orchgpt.workflow_runs import resolve
from orchgpt.workflows import (
    DEF_OPTION,
    Workflow,
    WorkflowBook,
    WorkflowError,
    default_dir,
    load_file,
    parse,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workflows"

SMALLEST = """\
# workflows.d/review.toml
name = "review"
type = "sequential"            # or "autonomous", "groupchat"
agents = ["coder", "reviewer"]
summary_method = "last"
"""


def test_the_smallest_file_loads_as_written(tmp_path: Path) -> None:
    (tmp_path / "review.toml").write_text(SMALLEST)
    wf = load_file(tmp_path / "review.toml")
    assert (wf.name, wf.type, wf.summary_method) == ("review", "sequential", "last")
    assert [(p.name, p.type) for p in wf.participants] == [
        ("coder", "coder"),
        ("reviewer", "reviewer"),
    ]
    assert Workflow.from_json(wf.to_json()) == wf  # it travels in the task as JSON


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (SMALLEST + "colour = 1\n", "colour: unknown key"),
        (
            SMALLEST.replace('"sequential"', '"pipeline"'),
            "type: Input should be 'sequential', 'autonomous' or",
        ),
        (SMALLEST + 'speaker_selection = "random"\n', "speaker_selection: Input should be"),
        (SMALLEST + "max_rounds = 0\n", "max_rounds: Input should be greater than or equal to 1"),
        (
            SMALLEST.replace('["coder", "reviewer"]', '[{name = "coder", typ = "x"}]'),
            "agents.0.typ: unknown key",
        ),
        (
            SMALLEST.replace('["coder", "reviewer"]', '["coder", "coder"]'),
            "agents: coder appear more than once",
        ),
        (
            SMALLEST.replace('["coder", "reviewer"]', '["user_proxy"]'),
            "at least one agent besides user_proxy",
        ),
        (
            SMALLEST.replace(
                '["coder", "reviewer"]',
                '[{name = "me", type = "user_proxy", human_input_mode = "sometimes"}, "coder"]',
            ),
            "agents.0.human_input_mode",
        ),
        (SMALLEST.replace("agents = ", "agents = = "), "not valid TOML"),
        (
            SMALLEST.replace('"reviewer"]', '"workflow"]'),
            "agents.1: a workflow cannot take part in a workflow",
        ),
        (
            SMALLEST + 'terminated_by = ["tester"]\n',
            "terminated_by: tester not among the agents (coder, reviewer)",
        ),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_the_problem(tmp_path: Path, body: str, named: str) -> None:
    f = tmp_path / "review.toml"
    f.write_text(body)
    with pytest.raises(WorkflowError) as e:
        load_file(f)
    assert str(e.value).startswith(f"{f}: ") and named in str(e.value)


def test_the_name_must_be_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text(SMALLEST)
    with pytest.raises(WorkflowError, match=r"other.toml: name: 'review' differs from the file name"):
        load_file(tmp_path / "other.toml")


def test_a_directory_keeps_the_good_files_and_reports_the_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "review.toml").write_text(SMALLEST)
    (tmp_path / "broken.toml").write_text('name = "broken"\ntype = "groupchat"\nagents = ["a"]\nrounds = 3\n')
    book = WorkflowBook(tmp_path)
    assert book.names() == ["review"] and len(book.errors) == 1 and "broken.toml: rounds: unknown key" in book.errors[0]
    assert not book.refresh()  # nothing changed
    (tmp_path / "broken.toml").write_text('name = "broken"\ntype = "groupchat"\nagents = ["a"]\nmax_rounds = 3\n')
    os.utime(tmp_path / "broken.toml", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert book.refresh() and book.names() == ["broken", "review"] and book.errors == []


def test_the_default_directory_is_beside_the_config_else_in_the_data_dir(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "orchgpt.toml"
    assert default_dir(tmp_path / "data", conf) == tmp_path / "data" / "workflows.d"
    (tmp_path / "etc" / "workflows.d").mkdir(parents=True)
    assert default_dir(tmp_path / "data", conf) == tmp_path / "etc" / "workflows.d"
    assert default_dir(tmp_path / "data", None) == tmp_path / "data" / "workflows.d"


def test_the_examples_load() -> None:
    book = WorkflowBook(EXAMPLES)
    assert book.errors == [] and {"code-review", "research-and-write"} <= set(book.names())
    review = book.workflows["code-review"]
    assert review.type == "groupchat" and [p.type for p in review.participants] == [
        "coder",
        "reviewer",
        "tester",
    ]
    assert book.workflows["research-and-write"].type == "sequential"


def test_the_daemon_resolves_the_name_and_refuses_a_definition_from_the_client(
    tmp_path: Path,
) -> None:
    (tmp_path / "review.toml").write_text(SMALLEST)
    book = WorkflowBook(tmp_path)
    known = {"coder", "reviewer", "workflow"}
    cmd = Command("workflow", input="x", options={"workflow": "review"})
    resolve(cmd, book, known)
    assert Workflow.from_json(cmd.options[DEF_OPTION]).name == "review"
    cases = [
        (
            {"workflow": "review", DEF_OPTION: '{"name": "evil"}'},
            known,
            "INVALID_ARGUMENT",
            "set by the daemon",
        ),
        ({}, known, "INVALID_ARGUMENT", "workflows: review"),
        ({"workflow": "nope"}, known, "NOT_FOUND", "no workflow 'nope'"),
        (
            {"workflow": "review"},
            {"coder"},
            "FAILED_PRECONDITION",
            "unknown agent type(s) reviewer",
        ),
    ]
    for options, types, code, text in cases:
        with pytest.raises(RoutingError) as e:
            resolve(Command("workflow", input="x", options=dict(options)), book, types)
        assert e.value.code == code and text in str(e.value), (options, str(e.value))
    other = Command("echo", input="x", options={DEF_OPTION: "anything"})
    resolve(other, book, known)  # not a workflow task: untouched
    assert other.options == {DEF_OPTION: "anything"}


def test_parse_names_its_source() -> None:
    with pytest.raises(WorkflowError, match=r"^<text>: colour: unknown key"):
        parse(SMALLEST + "colour = 1\n")
