"""The autogpt command grammar: good lines, bad lines with their exact messages, highlighting."""

from __future__ import annotations

import pytest
from orchgpt_cli import agents, registry
from orchgpt_cli.approvals import STOP_FEEDBACK, parse_answer
from orchgpt_cli.errors import ParseError
from orchgpt_cli.grammar import AgentCommand, MetaCommand, needs_registry, parse, quote, tokenize
from orchgpt_cli.lexer import highlight

from orchgpt.models import Action, ApprovalDecision

META = registry.names()


def p(line: str, known: tuple[str, ...] = ()) -> AgentCommand | MetaCommand | None:
    return parse(line, known_types=known, meta=META)


GOOD = [
    ('/echo run "hello"', ("echo", "run", "hello", "python")),
    ('/architect create "fastapi app" | python', ("architect", "create", "fastapi app", "python")),
    ('/ARCH CREATE "fastapi app" | Go', ("architect", "create", "fastapi app", "go")),
    ("/man create a todo app", ("manager", "create", "a todo app", "python")),
    ("/back run   spaced    words  ", ("backend", "run", "spaced words", "python")),
    ('/front run "keeps  inner  spaces"', ("frontend", "run", "keeps  inner  spaces", "python")),
    ('/design run "a | b" |typescript', ("designer", "run", "a | b", "typescript")),
    ("/opt run 'single \"quoted\"'", ("optimizer", "run", 'single "quoted"', "python")),
    ('/mail run "say \\"hi\\""', ("mailer", "run", 'say "hi"', "python")),
    ("/echo run x\\|y", ("echo", "run", "x|y", "python")),
    ("/git status", ("git", "status", "", "python")),
    ("/echo terminate", ("echo", "terminate", "", "python")),
    ("/echo run -- --not-an-option", ("echo", "run", "--not-an-option", "python")),
    ("/echo run -5 degrees", ("echo", "run", "-5 degrees", "python")),
]


@pytest.mark.parametrize(("line", "want"), GOOD)
def test_good_agent_lines(line: str, want: tuple[str, str, str, str]) -> None:
    cmd = p(line)
    assert isinstance(cmd, AgentCommand)
    assert (cmd.agent_type, cmd.action, cmd.input, cmd.language) == want
    assert not cmd.approval and not cmd.options and not cmd.task_id


def test_options_anywhere_after_the_action() -> None:
    cmd = p('/echo run --approve -o delay=2 "hi there" --option tokens=1 | go --id build-42')
    assert isinstance(cmd, AgentCommand)
    assert cmd.input == "hi there" and cmd.language == "go"
    assert cmd.approval is True
    assert cmd.options == {"delay": "2", "tokens": "1"}
    assert cmd.task_id == "build-42"
    command = cmd.for_session("s1")
    assert command.action is Action.RUN and command.session_id == "s1" and command.approval
    assert command.options == {"delay": "2", "tokens": "1"} and command.task_id == "build-42"


def test_inline_option_values_and_quoted_options_are_input() -> None:
    cmd = p('/echo run --option=delay=1 --id=abc "--approve"')
    assert isinstance(cmd, AgentCommand)
    assert cmd.options == {"delay": "1"} and cmd.task_id == "abc"
    assert cmd.input == "--approve" and not cmd.approval


def test_registry_types_are_agents_case_insensitively() -> None:
    cmd = p("/Builder run make it", known=("builder",))
    assert isinstance(cmd, AgentCommand) and cmd.agent_type == "builder" and cmd.input == "make it"


def test_meta_commands_keep_their_arguments() -> None:
    assert p('/TASK 3f2a "b c"') == MetaCommand("task", ["3f2a", "b c"])
    assert p("/help") == MetaCommand("help", [])
    assert p("   ") is None


FORM = "/<agent> <action> [input] [| language]"
BUILTINS = (
    "manager, architect, backend, frontend, designer, git, optimizer, mailer, echo, workflow, assistant, "
    "user_proxy, graph, blocks"
)
BAD = [
    ("hello", 'not a command: "hello": commands start with "/", e.g. /echo run "hi" (/help lists them)'),
    ("/", f"empty command: expected {FORM} or a command from /help"),
    (
        "/nope run x",
        f'unknown command or agent "/nope": expected {FORM} with an agent among {BUILTINS}, or a command from /help',
    ),
    ("/echo", "missing action: expected /echo <create|run|terminate|status> [input] [| language]"),
    ("/echo | go", "missing action: expected /echo <create|run|terminate|status> [input] [| language]"),
    (
        "/echo jump x",
        'unknown action "jump" for /echo: expected create, run, terminate or status, '
        'e.g. /echo run "fastapi app" | python',
    ),
    (
        '/echo "run" x',
        'unknown action "run" for /echo: expected create, run, terminate or status, '
        'e.g. /echo run "fastapi app" | python',
    ),
    ("/arch create", 'missing input: /arch create needs one, e.g. /arch run "fastapi app" | python'),
    ('/echo run ""', 'missing input: /echo run needs one, e.g. /echo run "fastapi app" | python'),
    ("/echo run | go", 'missing input: /echo run needs one, e.g. /echo run "fastapi app" | python'),
    ('/echo run "hello', 'unbalanced " quote at column 11: close it, e.g. /echo run "hello world" | python'),
    ("/echo run 'hello", "unbalanced ' quote at column 11: close it, e.g. /echo run 'hello world' | python"),
    ('/tasks "x', 'unbalanced " quote at column 8: close it, e.g. /echo run "hello world" | python'),
    ("/echo run x |", 'missing language after "|": e.g. /echo run "fastapi app" | python'),
    ("/echo run x | py go", 'one language after "|", got "py go": quote the input if it contains "|"'),
    ("/echo run x | 3d", 'invalid language "3d": expected a name like python or typescript'),
    (
        "/echo run a | b | c",
        'more than one "|": quote the input if it contains "|", e.g. /echo run "fastapi app" | python',
    ),
    (
        "/echo run --frob x",
        'unknown option "--frob": use --approve, -o KEY=VALUE or --id TASK_ID '
        '(put -- before input that starts with "-")',
    ),
    ("/echo run x -o", "option -o needs KEY=VALUE, e.g. -o delay=2"),
    ("/echo run x -o delay", 'option -o needs KEY=VALUE, e.g. -o delay=2 (got "delay")'),
    ("/echo run x -o =3", 'option -o needs KEY=VALUE, e.g. -o delay=2 (got "=3")'),
    ("/echo run x --id", "option --id needs a task id, e.g. --id build-42"),
    (
        "/echo run x --approve=yes",
        'unknown option "--approve=yes": use --approve, -o KEY=VALUE or --id TASK_ID '
        '(put -- before input that starts with "-")',
    ),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_bad_lines_give_one_clear_line(line: str, message: str) -> None:
    with pytest.raises(ParseError) as err:
        p(line)
    assert str(err.value) == message
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_tokenize_marks_quotes_pipes_and_positions() -> None:
    toks = tokenize('/echo run "a b"|go \'x')
    assert [(t.kind, t.value) for t in toks] == [
        ("word", "/echo"),
        ("word", "run"),
        ("word", "a b"),
        ("pipe", "|"),
        ("word", "go"),
        ("word", "x"),
    ]
    assert (toks[2].start, toks[2].end, toks[2].quoted) == (10, 15, True)
    assert toks[-1].unclosed_quote == 19 and toks[-1].quote_char == "'" and not toks[-1].closed


@pytest.mark.parametrize("text", ["plain", "two  words", 'say "hi"', "back\\slash", "a | b", "'", "--flag"])
def test_quote_round_trips(text: str) -> None:
    cmd = p(f"/echo run -- {quote(text)} | go")
    assert isinstance(cmd, AgentCommand) and cmd.input == text and cmd.language == "go"


def test_needs_registry_only_for_names_nobody_knows() -> None:
    assert needs_registry("/builder run x", META)
    assert not needs_registry("/arch run x", META)
    assert not needs_registry("/tasks", META)
    assert not needs_registry("hello", META)


def test_builtin_types_match_agentd() -> None:
    from agentd.agents import BUILTIN_TYPES

    assert set(agents.BUILTIN_TYPES) == set(BUILTIN_TYPES)
    assert set(agents.ALIASES.values()) <= set(BUILTIN_TYPES)


def test_highlighting_classes() -> None:
    frags = highlight('/echo run "hi" -o delay=2 | go', known_types=(), meta=META)
    styled = {text: style for style, text in frags if text.strip()}
    assert styled == {
        "/echo": "class:cmd.agent",
        "run": "class:cmd.action",
        '"hi"': "class:cmd.string",
        "-o": "class:cmd.option",
        "delay=2": "class:cmd.option",
        "|": "class:cmd.pipe",
        "go": "class:cmd.language",
    }
    assert "".join(t for _, t in frags) == '/echo run "hi" -o delay=2 | go'
    styled = {text: style for style, text in highlight("/tasks all", meta=META) if text.strip()}
    assert styled == {"/tasks": "class:cmd.meta", "all": ""}
    styled = {text: style for style, text in highlight("/nope jump", meta=META) if text.strip()}
    assert styled["/nope"] == "class:cmd.unknown"
    styled = {text: style for style, text in highlight("/echo jump", meta=META) if text.strip()}
    assert styled["jump"] == "class:cmd.badaction"
    frags = highlight('/echo run "open', meta=META)
    assert ("class:cmd.error", '"') in frags and ("class:cmd.string", "open") in frags
    assert highlight("y", meta=META) == [("", "y")]


@pytest.mark.parametrize(
    ("text", "decision", "count", "feedback"),
    [
        ("y", ApprovalDecision.APPROVE, 1, ""),
        ("YES", ApprovalDecision.APPROVE, 1, ""),
        # seed 003: "'n' to exit program": the call is rejected and the task is stopped
        ("n", ApprovalDecision.REJECT, 1, STOP_FEEDBACK),
        ("No", ApprovalDecision.REJECT, 1, STOP_FEEDBACK),
        ("a 3", ApprovalDecision.APPROVE_NEXT, 3, ""),
        ("all 2", ApprovalDecision.APPROVE_NEXT, 2, ""),
        # seed 003 (AutoGPT): "'y -N' to run N continuous commands"
        ("y -5", ApprovalDecision.APPROVE_NEXT, 5, ""),
        ("Y -1", ApprovalDecision.APPROVE_NEXT, 1, ""),
        ("yes -12", ApprovalDecision.APPROVE_NEXT, 12, ""),
        ("y-3", ApprovalDecision.APPROVE_NEXT, 3, ""),
        ("y - 2", ApprovalDecision.APPROVE_NEXT, 2, ""),
        ("use a temp dir instead", ApprovalDecision.FEEDBACK, 1, "use a temp dir instead"),
    ],
)
def test_approval_answers(text: str, decision: ApprovalDecision, count: int, feedback: str) -> None:
    r = parse_answer("req1", text)
    assert (r.request_id, r.decision, r.count, r.feedback) == ("req1", decision, count, feedback)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty answer"),
        ("a x", '"a" needs a number, e.g. a 5'),
        ("a 0", '"a" needs a number of calls of 1 or more'),
        ("y -x", '"y -N" needs a number, e.g. y -5'),
        ("y -0", '"y -N" needs a number of calls of 1 or more'),
    ],
)
def test_bad_approval_answers(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_answer("r", text)
