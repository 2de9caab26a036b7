"""A scripted team for the scripted OpenAI-compatible server: each agent gets deterministic answers.

The responder recognises the agent by its system prompt and answers by the
number of assistant turns already in the conversation, so a retried or
requeued sub-task gets the same answers again, whichever process asks::

    team = TeamScript()
    with ScriptedOpenAI(responder=team, models=("gpt-4o-mini",)) as srv: ...

``team.plan`` is the manager's answer (a JSON plan; set it to text to test
the fallback). ``team.gate("backend")`` makes the first request of that agent
wait until ``team.release("backend")`` (or 30 s): the test can then kill the
agent while its sub-task is running; later requests are not held.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from tests.support.scripted_openai import Response, system_text, text, tool_calls

ARCHITECTURE = """# Todo app

## Overview
A todo list: a small JSON API and a web page that uses it.

## Components
- **api**: HTTP server (standard library) serving JSON under /todos.
- **store**: in-memory list of todo items.
- **web**: static HTML, CSS and JavaScript page calling the api.

## Data model
- Todo: id (int), title (str), done (bool)

## Endpoints
| Method | Path | Request | Response | Description |
|---|---|---|---|---|
| GET | /health | - | {status} | liveness |
| GET | /todos | - | list of Todo | list the todos |
| POST | /todos | {title} | Todo | create a todo |
| DELETE | /todos/{id} | - | - | delete a todo |
"""
DIAGRAM = "flowchart LR\n    web[Web page] --> api[API server]\n    api --> store[(Todo store)]\n"

DESIGN = """# Todo app design

## Palette
- `#1F6FEB` primary (buttons, links)
- `#0D1117` text
- `#F6F8FA` background
- `#D1242F` danger (delete)

## Typography
System UI sans-serif; headings 24px/600, body 16px/400, small 13px.

## Layout
One centred column, 640px max, 16px gutters; the form on top, the list below; full width on phones.

## Components
- Add form: text input and a primary button.
- Todo item: title, done checkbox, delete button in the danger colour.
"""
MOCKUP = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 400" width="640" height="400">
  <rect width="640" height="400" fill="#F6F8FA"/>
  <text x="24" y="48" font-size="24" fill="#0D1117">Todos</text>
  <rect x="24" y="72" width="480" height="40" fill="#FFFFFF" stroke="#0D1117"/>
  <rect x="516" y="72" width="100" height="40" fill="#1F6FEB"/>
  <text x="540" y="98" fill="#FFFFFF">Add</text>
  <line x1="24" y1="140" x2="616" y2="140" stroke="#D1242F"/>
</svg>
"""

APP = '''"""Todo API on the standard library."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TODOS: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, obj=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        if self.path == "/todos":
            return self._send(200, TODOS)
        self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/todos":
            return self._send(404, {"error": "not found"})
        n = int(self.headers.get("Content-Length") or 0)
        item = json.loads(self.rfile.read(n) or b"{}")
        todo = {"id": len(TODOS) + 1, "title": item.get("title", ""), "done": False}
        TODOS.append(todo)
        self._send(201, todo)

    def do_DELETE(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "todos" and parts[1].isdigit():
            TODOS[:] = [t for t in TODOS if t["id"] != int(parts[1])]
            return self._send(204)
        self._send(404, {"error": "not found"})


def make_server(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    make_server(int(sys.argv[1])).serve_forever()
'''
APP_TESTS = """import json
import threading
import urllib.request

from app import make_server


def serve():
    srv = make_server(0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_create_list_delete():
    srv, base = serve()
    req = urllib.request.Request(base + "/todos", data=json.dumps({"title": "milk"}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 201
        todo = json.load(r)
    with urllib.request.urlopen(base + "/todos", timeout=5) as r:
        assert [t["title"] for t in json.load(r)] == ["milk"]
    req = urllib.request.Request(f"{base}/todos/{todo['id']}", method="DELETE")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    srv.shutdown()


def test_health():
    srv, base = serve()
    with urllib.request.urlopen(base + "/health", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}
    srv.shutdown()
"""
MANIFEST = json.dumps(
    {
        "start": "python app.py {port}",
        "routes": [
            {"method": "GET", "path": "/health", "status": 200},
            {"method": "GET", "path": "/todos", "status": 200},
            {"method": "POST", "path": "/todos", "status": 201, "body": {"title": "x"}},
        ],
    },
    indent=2,
)

INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Todos</title>
  <link rel="stylesheet" href="styles.css">
</head>
<body>
  <main>
    <h1>Todos</h1>
    <form id="add"><input id="title" placeholder="What needs doing?"><button>Add</button></form>
    <ul id="list"></ul>
  </main>
  <script src="app.js"></script>
</body>
</html>
"""
STYLES = """body { font-family: system-ui, sans-serif; background: #F6F8FA; color: #0D1117; }
main { max-width: 640px; margin: 0 auto; padding: 16px; }
button { background: #1F6FEB; color: #fff; border: 0; padding: 8px 16px; }
.delete { background: #D1242F; }
"""
SCRIPT = """const API_BASE = "";

async function api(path, options = {}) {
  const res = await fetch(`${API_BASE}${path}`, {
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.status === 204 ? null : res.json();
}

async function load() {
  const todos = await api("/todos");
  const list = document.getElementById("list");
  list.innerHTML = "";
  for (const t of todos) {
    const li = document.createElement("li");
    li.textContent = t.title;
    const del = document.createElement("button");
    del.className = "delete";
    del.textContent = "Delete";
    del.onclick = async () => { await api(`/todos/${t.id}`, { method: "DELETE" }); load(); };
    li.appendChild(del);
    list.appendChild(li);
  }
}

document.getElementById("add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const title = document.getElementById("title").value.trim();
  if (title) await api("/todos", { method: "POST", body: JSON.stringify({ title }) });
  load();
});

load();
"""

STORE = '''"""The todo store."""
TODOS: list[dict] = []


def add(title: str) -> dict:
    todo = {"id": len(TODOS) + 1, "title": title, "done": False}
    TODOS.append(todo)
    return todo


def remove(todo_id: int) -> None:
    TODOS[:] = [t for t in TODOS if t["id"] != todo_id]
'''
APP_SPLIT = (
    APP.replace("TODOS: list[dict] = []\n", "from store import TODOS, add, remove\n")
    .replace(
        """        todo = {"id": len(TODOS) + 1, "title": item.get("title", ""), "done": False}
        TODOS.append(todo)
""",
        """        todo = add(item.get("title", ""))
""",
    )
    .replace(
        """            TODOS[:] = [t for t in TODOS if t["id"] != int(parts[1])]
""",
        """            remove(int(parts[1]))
""",
    )
)

DEFAULT_PLAN = {
    "tasks": [
        {
            "id": "design-system",
            "agent": "architect",
            "task": "Design the todo app: components, data model, endpoints",
            "depends_on": [],
        },
        {
            "id": "ui-design",
            "agent": "designer",
            "task": "Design the UI: palette, type, layout, mock-ups",
            "depends_on": ["design-system"],
        },
        {"id": "api", "agent": "backend", "task": "Build the todo API with its tests", "depends_on": ["design-system"]},
        {
            "id": "web",
            "agent": "frontend",
            "task": "Build the web page wired to the API",
            "depends_on": ["api", "ui-design"],
        },
        {"id": "commit", "agent": "git", "task": "Commit everyone's work", "depends_on": ["web"]},
    ]
}


def _writes(files: dict[str, str], note: str) -> list[Response]:
    return [tool_calls(*(("write_file", {"path": p, "content": c}) for p, c in files.items())), text(note)]


class TeamScript:
    """A responder ``(request) -> Response`` for ScriptedOpenAI; thread-safe."""

    def __init__(self) -> None:
        self.plan: str = json.dumps(DEFAULT_PLAN)
        self.answers: dict[str, Sequence[Response]] = {
            "architect": _writes(
                {"ARCHITECTURE.md": ARCHITECTURE, "architecture.mmd": DIAGRAM}, "A web page, an API and a store."
            ),
            "designer": _writes(
                {"DESIGN.md": DESIGN, "mockups/main.svg": MOCKUP}, "Calm blue palette, one column, two components."
            ),
            "backend": _writes(
                {"app.py": APP, "test_app.py": APP_TESTS, "service.json": MANIFEST}, "Todo API with tests."
            ),
            "frontend": _writes(
                {"frontend/index.html": INDEX, "frontend/styles.css": STYLES, "frontend/app.js": SCRIPT},
                "Todo page wired to the API.",
            ),
            "optimizer": _writes({"store.py": STORE, "app.py": APP_SPLIT}, "Split the store out of app.py."),
        }
        self.requests: dict[str, int] = {}
        self._gates: dict[str, threading.Event] = {}
        self.held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @staticmethod
    def agent_of(req: dict[str, Any]) -> str:
        s = system_text(req)
        for needle, agent in (
            ("manager of a team", "manager"),
            ("software architect", "architect"),
            ("UI designer", "designer"),
            ("backend engineer", "backend"),
            ("frontend engineer", "frontend"),
            ("optimizer of a team", "optimizer"),
        ):
            if needle in s:
                return agent
        return "unknown"

    def gate(self, agent: str) -> threading.Event:
        """Hold the first request of this agent until released; returns an event set when it arrives."""
        self._gates[agent] = threading.Event()
        self.held[agent] = threading.Event()
        return self.held[agent]

    def release(self, agent: str) -> None:
        g = self._gates.get(agent)
        if g is not None:
            g.set()

    def __call__(self, req: dict[str, Any]) -> Response:
        agent = self.agent_of(req)
        with self._lock:
            self.requests[agent] = self.requests.get(agent, 0) + 1
            first = self.requests[agent] == 1
        gate = self._gates.get(agent)
        if gate is not None and first:
            self.held[agent].set()
            gate.wait(30)
        if agent == "manager":
            return text(self.plan)
        seq = self.answers.get(agent)
        if not seq:
            return text(f"(no scripted answer for {agent})")
        turns = sum(1 for m in req.get("messages") or [] if m.get("role") == "assistant")
        return seq[min(turns, len(seq) - 1)]
