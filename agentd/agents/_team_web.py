"""Static checks of a web frontend: the files a page loads, and the API calls its JavaScript makes.

`page_refs` lists the local files an HTML page references; `api_calls` finds
the ``fetch()`` calls of a script (and calls of a wrapper function around
``fetch``) with their method and URL path, the URL resolved from string
literals, template literals, concatenation and string constants (an unknown
part becomes ``{}``, a base URL variable in front is dropped); `declared_routes`
collects the backend's routes from its ``service.json``, the architecture
document and the backend's result; `match_route` pairs a call with a route.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE)\b\s*\|?\s*`?(/[^\s|`),]*)")
_CONST = re.compile(r"\b(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(['\"`])([^'\"`\n]*)\2")
_FUNC_DEF = re.compile(
    r"(?:async\s+)?function\s+([A-Za-z_$][\w$]*)\s*\(|"
    r"(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:function\b|\([^()]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)"
)


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str  # "/todos/{}"; "" when the URL could not be resolved
    source: str  # the call's text, shortened
    line: int


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    origin: str  # "service.json", "ARCHITECTURE.md", "backend result"


# ---------------------------------------------------------------- HTML


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.inline_scripts: list[str] = []
        self._in_script = False
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.refs.append(("script", a["src"] or ""))
            else:
                self._in_script = True
                self.inline_scripts.append("")
        elif tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or "").lower():
            self.refs.append(("stylesheet", a["href"] or ""))
        elif tag in ("img", "source") and a.get("src"):
            self.refs.append((tag, a["src"] or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and self.inline_scripts:
            self.inline_scripts[-1] += data


def page_refs(html: str) -> tuple[list[tuple[str, str]], list[str], int]:
    """(local references as (tag, path), inline scripts, number of tags) of an HTML page."""
    p = _Refs()
    p.feed(html)
    p.close()
    local = []
    for tag, url in p.refs:
        u = url.strip()
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", u, re.I):
            continue  # remote, data: or fragment
        local.append((tag, u.split("?", 1)[0].split("#", 1)[0]))
    return local, p.inline_scripts, p.tags


# ---------------------------------------------------------------- JavaScript


def _skip_string(src: str, i: int) -> int:
    """Index after the string literal starting at src[i]."""
    q = src[i]
    i += 1
    depth = 0
    while i < len(src):
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if q == "`" and c == "$" and src[i + 1 : i + 2] == "{":
            depth += 1
            i += 2
            continue
        if q == "`" and depth and c == "}":
            depth -= 1
        elif c == q and not depth:
            return i + 1
        i += 1
    return i


def call_args(src: str, start: int) -> tuple[list[str], int]:
    """The top-level argument texts of a call whose '(' ends just before start; and the end index."""
    args, depth, i, cur = [], 0, start, start
    while i < len(src):
        c = src[i]
        if c in "'\"`":
            i = _skip_string(src, i)
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = len(src) if j < 0 else j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append(src[cur:i].strip())
                return [a for a in args if a], i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(src[cur:i].strip())
            cur = i + 1
        i += 1
    return [a for a in args if a], i


def _split_plus(expr: str) -> list[str]:
    parts, depth, i, cur = [], 0, 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "'\"`":
            i = _skip_string(expr, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "+" and depth == 0:
            parts.append(expr[cur:i].strip())
            cur = i + 1
        i += 1
    parts.append(expr[cur:].strip())
    return parts


def _template(body: str, consts: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        return consts.get(name, "{}")

    return re.sub(r"\$\{([^}]*)\}", sub, body)


def _join(expr: str, consts: dict[str, str]) -> str:
    out = ""
    for part in _split_plus(expr):
        if len(part) >= 2 and part[0] in "'\"`" and part[-1] == part[0]:
            body = part[1:-1]
            out += _template(body, consts) if part[0] == "`" else body
        elif part in consts:
            out += consts[part]
        else:
            out += "{}"
    return out


def _normalise(url: str) -> str:
    host = re.match(r"^https?://[^/]*", url)
    if host:
        url = "/" + url[host.end() :]
    url = re.sub(r"^\{\}(?=/)", "", url)  # a base URL variable in front
    url = re.sub(r"/{2,}", "/", url)
    url = url.split("?", 1)[0].split("#", 1)[0]
    return url if url.startswith("/") else ""


def resolve_url(expr: str, consts: dict[str, str]) -> str:
    """The URL path an expression builds ("" when it does not look like a URL)."""
    return _normalise(_join(expr, consts))


def _identifiers(expr: str) -> set[str]:
    """Names an expression uses as plain operands or inside template ${...}."""
    names = set()
    for part in _split_plus(expr):
        if re.fullmatch(r"[A-Za-z_$][\w$]*", part):
            names.add(part)
        elif part[:1] == "`":
            names |= {m.strip() for m in re.findall(r"\$\{\s*([A-Za-z_$][\w$]*)\s*\}", part)}
    return names


def _consts(src: str) -> dict[str, str]:
    out = {}
    for name, _q, value in _CONST.findall(src):
        if "${" not in value:
            out[name] = value
    return out


def _method(args: list[str], consts: dict[str, str]) -> str:
    for a in args:
        m = re.fullmatch(r"(['\"`])([A-Za-z]+)\1", a.strip())
        if m and m.group(2).upper() in METHODS:
            return m.group(2).upper()
        m = re.search(r"\bmethod\s*:\s*(['\"`])([A-Za-z]+)\1", a)
        if m and m.group(2).upper() in METHODS:
            return m.group(2).upper()
    return "GET"


def _block_end(src: str, i: int, stop: str = "") -> int:
    """Index after the bracketed block opening at src[i], or (stop given) of the first stop char at depth 0."""
    depth = 0
    while i < len(src):
        c = src[i]
        if c in "'\"`":
            i = _skip_string(src, i)
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            if stop and "\n" in stop and depth == 0:
                return len(src) if j < 0 else j
            i = len(src) if j < 0 else j
            continue
        if stop and depth == 0 and c in stop:
            return i
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return i
            if depth == 0 and not stop:
                return i + 1
        i += 1
    return i


def _function_spans(src: str) -> list[tuple[str, int, int, list[str]]]:
    """(name, start, end, parameters) of the named functions of a script (declarations, expressions, arrows)."""
    spans = []
    for m in _FUNC_DEF.finditer(src):
        name = m.group(1) or m.group(2)
        i = m.end()
        head = m.group(0)
        params: list[str] = []
        if head.rstrip().endswith("=>"):
            inner = head[head.find("=", 0) + 1 : head.rstrip().rfind("=>")]
            params = re.findall(r"[A-Za-z_$][\w$]*", inner.replace("async", " "))
        else:
            if not head.endswith("("):
                j = src.find("(", i)
                if j < 0:
                    continue
                i = j + 1
            args, i = call_args(src, i)
            params = [re.split(r"[\s=]", a.strip().lstrip("."), maxsplit=1)[0] for a in args]
        while i < len(src) and src[i].isspace():
            i += 1
        end = _block_end(src, i) if src[i : i + 1] == "{" else _block_end(src, i, ";\n")
        spans.append((name, m.start(), end, params))
    return spans


def _enclosing_function(src: str, pos: int) -> tuple[str, list[str]]:
    inside = [(start, name, params) for name, start, end, params in _function_spans(src) if start < pos < end]
    if not inside:
        return "", []
    _, name, params = max(inside)
    return name, params


def api_calls(src: str) -> list[ApiCall]:
    """fetch() calls of a script, and calls of the functions that wrap fetch with a URL parameter."""
    consts = _consts(src)
    found: list[ApiCall] = []
    wrappers: dict[str, str] = {}  # function name -> URL prefix it puts in front of its parameter
    for m in re.finditer(r"(?<![\w$.])fetch\s*\(", src):
        args, end = call_args(src, m.end())
        if not args:
            continue
        line = src.count("\n", 0, m.start()) + 1
        fn, params = _enclosing_function(src, m.start())
        if fn and _identifiers(args[0]) & set(params):
            prefix = _join(args[0], {**consts, **{p: "" for p in params}})
            wrappers[fn] = re.sub(r"^https?://[^/]*", "", prefix).split("?", 1)[0]
            continue
        found.append(
            ApiCall(
                _method(args[1:], consts),
                resolve_url(args[0], consts),
                " ".join(src[m.start() : end].split())[:120],
                line,
            )
        )
    for fn, prefix in wrappers.items():
        for m in re.finditer(rf"(?<![\w$.]){re.escape(fn)}\s*\(", src):
            before = src[max(0, m.start() - 30) : m.start()]
            if re.search(r"function\s+$", before):
                continue  # the definition itself
            args, end = call_args(src, m.end())
            paths = [resolve_url(a, consts) for a in args]
            path = next((p for p in paths if p), "")
            if not path:
                continue
            found.append(
                ApiCall(
                    _method(args, consts),
                    _normalise(prefix + path),
                    " ".join(src[m.start() : end].split())[:120],
                    src.count("\n", 0, m.start()) + 1,
                )
            )
    return sorted(found, key=lambda c: c.line)


# ---------------------------------------------------------------- routes


def routes_from_manifest(text: str) -> list[Route]:
    try:
        m = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return []
    out = []
    for r in (m.get("routes") if isinstance(m, dict) else None) or []:
        if isinstance(r, dict) and str(r.get("path", "")).startswith("/"):
            out.append(Route(str(r.get("method", "GET")).upper(), str(r["path"]).split("?")[0], "service.json"))
    return out


def routes_from_text(text: str, origin: str) -> list[Route]:
    return [Route(m.group(1).upper(), m.group(2).rstrip(".:;").split("?")[0], origin) for m in _ENDPOINT.finditer(text)]


def declared_routes(*sources: list[Route]) -> list[Route]:
    seen: dict[tuple[str, str], Route] = {}
    for src in sources:
        for r in src:
            seen.setdefault((r.method, _norm(r.path)), r)
    return list(seen.values())


def _norm(path: str) -> str:
    return "/" + "/".join(s for s in path.split("/") if s)


def _param(seg: str) -> bool:
    return seg in ("{}", "*") or bool(re.fullmatch(r"\{[^}]*\}|:[\w]+|<[^>]*>|\d+", seg))


def path_matches(call: str, route: str) -> bool:
    a, b = _norm(call).split("/"), _norm(route).split("/")
    if len(a) != len(b):
        return False
    return all(x == y or _param(x) or _param(y) for x, y in zip(a, b, strict=True))


def match_route(call: ApiCall, routes: list[Route]) -> tuple[Route | None, list[str]]:
    """(the route a call hits, or None and the methods declared for its path)."""
    methods = []
    for r in routes:
        if path_matches(call.path, r.path):
            if r.method == call.method:
                return r, []
            methods.append(r.method)
    return None, sorted(set(methods))
