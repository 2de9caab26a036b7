"""A small mutation check of our own: do the model's tests fail when its code is broken?

`make_mutants` breaks Python code on purpose, one change per copy, with `ast`:
function bodies raising, return values swapped (None) or negated, arithmetic and
comparison operators flipped (``+``/``-``, ``*``/``/``, ``<``/``>=``, ``==``/``!=``...),
conditions negated (those that are not a comparison: flipping it says the same). At most
`LIMIT` mutants, spread over the kinds of change.

`run_mutants` runs the tests once per mutant in the task's sandbox, on a copy of the
project in the sandbox's temporary directory (the workspace is never changed): one
sandboxed driver imports pytest once and forks a fresh pytest per mutant (a test command
of the model's own is run as a shell command instead), each with a time limit. A
mutant is *caught* when the tests fail or time out. When none is caught the tests
are vacuous: they pass whatever the code does.
"""

from __future__ import annotations

import ast
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..sandbox import Sandbox
from ..workspace import SKIP_DIRS, Workspace

LIMIT = 12
FILE_LIMIT = 200_000  # bytes: bigger files are not mutated
SCRATCH = ".orchgpt/mutants.json"  # in the workspace, removed after the run
TOOL = "agentd mutation"

_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
KINDS = ("raise", "return", "arith", "compare", "condition")


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int
    kind: str  # one of KINDS
    description: str  # "add: `return a - b` -> `return a + b`"
    source: str  # the whole mutated file

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class MutationReport:
    mutants: list[Mutant]
    caught: list[Mutant] = field(default_factory=list)
    survived: list[Mutant] = field(default_factory=list)
    not_run: int = 0
    problem: str = ""  # why the check could not judge (baseline failed, driver died...)

    @property
    def run(self) -> int:
        return len(self.caught) + len(self.survived)

    @property
    def score(self) -> str:
        if not self.run:
            return "no mutants run"
        return f"{len(self.caught)}/{self.run} ({100 * len(self.caught) // self.run}%)"

    @property
    def vacuous(self) -> bool:
        return not self.problem and self.run > 0 and not self.caught


def is_test_file(path: str) -> bool:
    p = PurePosixPath(path)
    return (
        p.name.startswith("test_")
        or p.name.endswith("_test.py")
        or p.name == "conftest.py"
        or any(part in ("tests", "test") for part in p.parts[:-1])
    )


def mutable_files(ws: Workspace) -> dict[str, str]:
    """The Python code of the workspace that is not a test: {path: source}."""
    out = {}
    for p in ws.files():
        if not p.endswith(".py") or is_test_file(p) or p.startswith(".") or "/." in p:
            continue
        try:
            data = ws.read_bytes(p)
        except OSError:
            continue
        if len(data) <= FILE_LIMIT:
            out[p] = data.decode("utf-8", errors="replace")
    return out


# ---------------------------------------------------------------- making mutants


def _short(node: ast.AST, width: int = 50) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _sites(tree: ast.AST) -> list[tuple[str, str, int, ast.AST]]:
    """(kind, function name, line, node) of every place a mutant can be made, in source order,
    inside functions only (module-level code and `if __name__ == ...` are left alone)."""
    out: list[tuple[str, str, int, ast.AST]] = []

    def visit(node: ast.AST, fn: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body = body[1:]
            trivial = all(
                isinstance(b, ast.Pass) or (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)) for b in body
            )
            if body and not trivial:
                out.append(("raise", node.name, node.lineno, node))
            fn = node.name
        elif _is_main_guard(node):
            return
        elif fn:
            if (
                isinstance(node, ast.Return)
                and node.value is not None
                and not (isinstance(node.value, ast.Constant) and node.value.value is None)
            ):
                out.append(("return", fn, node.lineno, node))
            elif (
                isinstance(node, (ast.BinOp, ast.AugAssign))
                and type(node.op) in _BINOP_SWAP
                and not (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.Mod)
                    and isinstance(node.left, (ast.Constant, ast.JoinedStr))
                )
            ):  # "%s" % x
                out.append(("arith", fn, node.lineno, node))
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
                out.append(("compare", fn, node.lineno, node))
            elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and not (
                isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 and type(node.test.ops[0]) in _CMP_SWAP
            ):  # flipping the comparison says the same
                out.append(("condition", fn, node.lineno, node))
        for child in ast.iter_child_nodes(node):
            visit(child, fn)

    visit(tree, "")
    return out


def _negate(expr: ast.expr) -> ast.expr:
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        return expr.operand
    return ast.UnaryOp(op=ast.Not(), operand=expr)


def _mutate(kind: str, node: ast.AST) -> str:
    """Change the node in place; a description of the change."""
    if kind == "raise" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = (
            node.body[:1]
            if (isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant))
            else []
        )
        node.body = [*doc, ast.parse("raise RuntimeError('mutant: body replaced')").body[0]]
        return "body raises RuntimeError"
    if kind == "return" and isinstance(node, ast.Return) and node.value is not None:
        before = _short(node)
        v = node.value
        boolish = (
            isinstance(v, (ast.Compare, ast.BoolOp))
            or (isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.Not))
            or (isinstance(v, ast.Constant) and isinstance(v.value, bool))
        )
        node.value = _negate(v) if boolish else ast.Constant(value=None)
        return f"`{before}` -> `{_short(node)}`"
    if kind == "arith" and isinstance(node, (ast.BinOp, ast.AugAssign)):
        before = _short(node)
        node.op = _BINOP_SWAP[type(node.op)]()
        return f"`{before}` -> `{_short(node)}`"
    if kind == "compare" and isinstance(node, ast.Compare):
        before = _short(node)
        node.ops = [_CMP_SWAP[type(node.ops[0])]()]
        return f"`{before}` -> `{_short(node)}`"
    if kind == "condition" and isinstance(node, (ast.If, ast.While, ast.IfExp)):
        before = _short(node.test)
        node.test = _negate(node.test)
        return f"condition `{before}` negated"
    raise ValueError(f"cannot mutate {type(node).__name__} as {kind}")


def make_mutants(files: Mapping[str, str], limit: int = LIMIT) -> list[Mutant]:
    """Up to `limit` mutants of the files, taking the kinds of change in turn (a body that
    raises, a return value, an operator, a comparison, a condition, then the next of each)."""
    by_kind: dict[str, list[tuple[str, int]]] = {k: [] for k in KINDS}
    for path in sorted(files):
        try:
            tree = ast.parse(files[path])
        except (SyntaxError, ValueError):
            continue
        for i, (kind, _fn, _line, _node) in enumerate(_sites(tree)):
            by_kind[kind].append((path, i))
    order: list[tuple[str, int]] = []
    queues = [list(by_kind[k]) for k in KINDS]
    while len(order) < limit and any(queues):
        for q in queues:
            if q and len(order) < limit:
                order.append(q.pop(0))
    out = []
    for path, i in order:
        tree = ast.parse(files[path])  # a fresh tree per mutant
        kind, fn, line, node = _sites(tree)[i]
        what = _mutate(kind, node)
        try:
            source = ast.unparse(ast.fix_missing_locations(tree))
        except (ValueError, TypeError, RecursionError):
            continue
        out.append(Mutant(path, line, kind, f"{fn}: {what}", source + "\n"))
    return out


def _imported_packages(files: Mapping[str, str], local: set[str]) -> list[str]:
    """Top-level modules the code imports that are not the project's own (preloaded once)."""
    names: set[str] = set()
    for text in files.values():
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return sorted(n for n in names - local if n.isidentifier())


# ---------------------------------------------------------------- running them

DRIVER = r"""
import json, os, shutil, signal, subprocess, sys, tempfile, time
cfg = json.load(open(sys.argv[1]))
root = os.getcwd()
# nothing is imported from the workspace itself: only the copies are tested
sys.path[:] = [p for p in sys.path if p not in ("", ".", root)]
skip = set(cfg["skip"])
work = tempfile.mkdtemp(prefix="mutants-")
proj = os.path.join(work, "p")
shutil.copytree(root, proj, symlinks=True, ignore=lambda d, names: [n for n in names if n in skip])
args = cfg.get("pytest")
if args is not None:
    import pytest
    for name in cfg.get("preload", []):
        try:
            __import__(name)
        except BaseException:
            pass
    # a run in an empty directory imports pytest's plugins once, before the forks
    empty = os.path.join(work, "empty")
    os.mkdir(empty)
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        os.chdir(empty)
        pytest.main(list(args))
    except BaseException:
        pass
    finally:
        os.chdir(root)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)

def once(timeout):
    if args is not None:
        pid = os.fork()
        if pid == 0:
            code = 98
            try:
                os.setsid()
                os.chdir(proj)
                sys.path.insert(0, proj)
                fd = os.open(os.devnull, os.O_RDWR)
                for n in (0, 1, 2):
                    os.dup2(fd, n)
                code = int(pytest.main(list(args)))
            except BaseException:
                code = 99
            os._exit(code)
    else:
        # keep the Popen: a discarded one polls (and reaps) its child when garbage-collected,
        # and the waitpid below then fails with ECHILD
        proc = subprocess.Popen(cfg["command"], shell=True, cwd=proj, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        pid = proc.pid
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.02)
    try:
        os.killpg(pid, signal.SIGKILL)  # what the tests left running, or the whole run
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    return (None if timed_out else os.waitstatus_to_exitcode(status)), timed_out

report = {"baseline": None, "results": [], "not_run": 0}
started = time.monotonic()
code, late = once(cfg["timeout"])
report["baseline"] = "timeout" if late else code
if code == 0:
    for i, m in enumerate(cfg["mutants"]):
        if time.monotonic() - started + cfg["timeout"] > cfg["budget"]:
            report["not_run"] = len(cfg["mutants"]) - i
            break
        target = os.path.join(proj, m["path"])
        with open(target, "rb") as f:
            original = f.read()
        with open(target, "w", encoding="utf-8") as f:
            f.write(m["source"])
        code, late = once(cfg["timeout"])
        with open(target, "wb") as f:
            f.write(original)
        report["results"].append({"i": i, "code": code, "timeout": late})
shutil.rmtree(work, ignore_errors=True)
print("MUTATION-REPORT " + json.dumps(report))
"""


def _pytest_args(test_command: Sequence[str]) -> list[str] | None:
    """pytest's own arguments when the test command is `<python> -m pytest ...`, else None."""
    argv = list(test_command)
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1:3] == ["-m", "pytest"]:
        return [*argv[3:], "-x"]
    return None


async def run_mutants(
    sandbox: Sandbox,
    ws: Workspace,
    mutants: list[Mutant],
    test_command: Sequence[str] | str,
    *,
    per_mutant_s: float,
    total_s: float,
) -> MutationReport:
    """Run the tests against each mutant in the sandbox (see the module's doc)."""
    report = MutationReport(mutants)
    if not mutants:
        return report
    local = {PurePosixPath(p).parts[0].removesuffix(".py") for p in ws.files()}
    code = {p: ws.read_text(p) for p in ws.files() if p.endswith(".py") and not p.startswith(".")}
    cfg: dict[str, Any] = {
        "skip": sorted(SKIP_DIRS | {".orchgpt"}),
        "timeout": per_mutant_s,
        "budget": max(per_mutant_s, total_s - 5),
        "mutants": [{"path": m.path, "source": m.source} for m in mutants],
    }
    try:
        argv = shlex.split(test_command) if isinstance(test_command, str) else list(test_command)
    except ValueError:
        argv = []
    args = _pytest_args(argv)
    if args is not None:
        cfg["pytest"] = args
        cfg["preload"] = _imported_packages(code, local)
    else:
        cfg["command"] = test_command if isinstance(test_command, str) else shlex.join(test_command)
    ws.write_text(SCRATCH, json.dumps(cfg))
    try:
        result = await sandbox.run([sys.executable, "-c", DRIVER, SCRATCH], timeout_s=total_s + 10)
    finally:
        try:
            ws.resolve(SCRATCH).unlink(missing_ok=True)
        except OSError:
            pass
    line = next((ln for ln in reversed(result.stdout.splitlines()) if ln.startswith("MUTATION-REPORT ")), "")
    if not line:
        report.problem = "the mutation run did not finish: " + " ".join(result.describe(600).split())
        report.not_run = len(mutants)
        return report
    raw = json.loads(line[len("MUTATION-REPORT ") :])
    if raw.get("baseline") != 0:
        report.problem = (
            f"the tests do not pass in a copy of the project (exit {raw.get('baseline')}), so mutants cannot be judged"
        )
        report.not_run = len(mutants)
        return report
    for r in raw.get("results", []):
        m = mutants[int(r["i"])]
        (report.caught if r.get("timeout") or r.get("code") != 0 else report.survived).append(m)
    report.not_run = int(raw.get("not_run") or 0)
    if not report.run:
        report.problem = f"no mutant could run within the time limit ({total_s:.0f}s)"
    return report
