"""Section by section with worked examples: for models that cannot use the tools.

The bundled gemma-3-270m is a *base* model: it cannot emit tool calls and it
echoes instructions back instead of following them, but it continues a
pattern well. So the work is asked for one section at a time, each as a short
few-shot exchange without tools (``Components of a chat server:`` -> two
example bullets, two more examples, ``Components of a fastapi app:``), at most
`MAX_TOKENS` tokens at temperature 0.2, and the answer is parsed line by line:

* the leading block of lines in the section's form is kept (a model that goes
  on rambling or repeating itself is cut off there; duplicates are dropped);
* a line that repeats a line of the prompt (a question or an example, also
  barely changed or with junk after it) is dropped, and so is an item named
  after the examples' subject matter (`EXAMPLE_DOMAIN`: 'photo store',
  '/chats'), so an echoed prompt never counts as an answer;
* too few usable lines and the section is asked again, at most `TRIES` times
  in all (sampled again, then with the examples in another order; the caller
  may give another subject for each try); then `FillInFailed` names the section
  and the reason.

An agent supplies the `Section`s (the question, its answer for each of the
`WORKED_EXAMPLES`, and how to parse a line); the examples' subjects, their
order, the echo rules and the spelling of the subject are tuned here, to the
small model, and shared by every agent that uses the strategy:

    COMPONENTS = Section("Components", "Components of {subject}:", (answer_chat, answer_photo,
                         answer_recipe), parse_component, key=lambda c: c.name.lower(), minimum=2,
                         form="bullets 'name: what it does'")
    items, model = await FillIn().ask(llm, ctx, COMPONENTS, [subject_of("fastapi app")])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Generic, Protocol, TypeVar

from orchgpt.models import Usage

from ...errors import LLMError, TaskFailed

MAX_TOKENS = 200
TEMPERATURE = 0.2
TRIES = 3  # per section
ECHO_SIMILARITY = 0.85  # a line holding this much of a line of the prompt is a copy of it


class FillInFailed(TaskFailed):
    """A section could not be filled in from the model's answers; the message names it."""


class Progress(Protocol):
    """What the strategy reports to (an agent's TaskContext)."""

    def step(self, text: str, **data: str) -> Any: ...

    def token(self, text: str) -> Any: ...

    def add_usage(self, usage: Usage) -> Any: ...


# ---------------------------------------------------------------- the worked examples
@dataclass(frozen=True)
class Example:
    project: str  # as a section about the project asks ("a chat server")
    entity: str  # as a section about an entity asks ("Chat")


# The subjects every section's examples are about, in this order (a Section gives one
# answer per example).
WORKED_EXAMPLES = (
    Example("a chat server", "Chat"),
    Example("a photo gallery", "Photo"),
    Example("a recipe site", "Recipe"),
)
# The subject matter of the examples: an item named after it (unless the question is about it)
# copies an example ('- photo store: ...', 'GET /chat' for a fastapi app).
EXAMPLE_DOMAIN = frozenset(
    {"chat", "photo", "gallery", "galleries", "image", "caption", "uploader", "recipe", "ingredient"}
)


# ---------------------------------------------------------------- reading a line
BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+(.*\S)\s*$")
_SEP = re.compile(r"\s*(?::|\s[-\u2013\u2014]\s)\s*")


def strip_md(s: str) -> str:
    return s.strip().strip("*_`").strip()


def clean(line: str) -> str:
    """A model's line without a trailing run of non-ASCII junk (what a base model emits at the
    end of its turn, e.g. 'stores the data łę') when the rest of the line is ASCII."""
    m = re.match(r"^([\x00-\x7f]*?[A-Za-z)\]][\x00-\x7f]*?)\s*[^\x00-\x7f]+[\S]*\s*$", line)
    return m.group(1).rstrip() if m else line.rstrip()


def name_and_rest(body: str) -> tuple[str, str] | None:
    """'name: what it is' (or 'name - what it is') -> (name, rest); None when it is not that."""
    parts = _SEP.split(body, maxsplit=1)
    if len(parts) != 2:
        return None
    name, rest = strip_md(parts[0]), parts[1].strip()
    if not re.search(r"[A-Za-z]", name) or len(name) > 60 or len(name.split()) > 6:
        return None
    if not re.search(r"[A-Za-z]", rest):
        return None
    return name, rest


# ---------------------------------------------------------------- the section prompts
T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    title: str
    question: str  # "{subject}" is the project (or, for ``about="entity"``, an entity)
    answers: tuple[str, ...]  # the answer for each of WORKED_EXAMPLES, in order
    parse: Callable[[str], T | None]
    key: Callable[[T], Any]
    minimum: int
    form: str  # what a usable line looks like, for the failure message
    cap: int = 6
    about: str = "project"  # "project" | "entity": what the examples' subjects are
    # Order of the examples on each try (rotation): a retry first samples the same prompt again.
    # With gemma-3-270m the order matters (two examples, data model: chat-then-photo 3 of 4 good,
    # photo-then-chat 1 of 4); with three examples in this order 10 of 10 were good.
    orders: tuple[int, ...] = (0, 0, 1)

    @property
    def examples(self) -> tuple[tuple[str, str], ...]:
        """(subject, answer) of each worked example."""
        subjects = [e.entity if self.about == "entity" else e.project for e in WORKED_EXAMPLES]
        return tuple(zip(subjects, self.answers, strict=True))

    def ident(self, item: T) -> str:
        """What names the item (component or entity name, endpoint path)."""
        k = self.key(item)
        return str(k[-1] if isinstance(k, tuple) else k)

    def messages(self, subject: str, attempt: int) -> list[dict[str, str]]:
        """The few-shot exchange: the examples (rotated as `orders` says), then the question."""
        examples = self.examples
        k = self.orders[attempt % len(self.orders)] % len(examples)
        examples = examples[k:] + examples[:k]
        msgs: list[dict[str, str]] = []
        for ex_subject, answer in examples:
            msgs += [
                {"role": "user", "content": self.question.format(subject=ex_subject)},
                {"role": "assistant", "content": answer},
            ]
        msgs.append({"role": "user", "content": self.question.format(subject=subject)})
        return msgs


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9/{}]+", " ", s.lower()).strip()


def _prompt_lines(messages: Sequence[dict[str, str]]) -> list[str]:
    return [n for m in messages for ln in m["content"].splitlines() if len(n := _norm(ln)) >= 8]


_STOP = {"a", "an", "the", "of", "my", "our", "for", "with", "and", "to", "in"}


def _stems(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z]+", text.lower())}


def _is_echo(line: str, prompt: list[str], own_words: set[str]) -> bool:
    """A line of the prompt, or one of its examples barely changed ('GET /chat - list the chats'):
    nearly the same text, without a word of the question's subject that the examples lack."""
    n = _norm(line)
    if len(n) < 8:
        return False
    if any(n.startswith(p) or p.startswith(n) for p in prompt):
        return True
    if own_words & set(n.replace("/", " ").split()):
        return False  # the pattern applied to this subject ('- fastapi store: ...'), not a copy
    return any(_covers(p, n) for p in prompt)


def _covers(p: str, n: str) -> bool:
    """Whether n is nearly prompt line p: nearly the same text, or nearly all of p with
    end-of-turn junk after it."""
    if len(n) > len(p) * 1.6:
        return False
    matched = sum(b.size for b in SequenceMatcher(None, n, p, autojunk=False).get_matching_blocks())
    return matched / len(p) >= ECHO_SIMILARITY or 2 * matched / (len(n) + len(p)) >= ECHO_SIMILARITY


@dataclass
class Answer(Generic[T]):
    items: list[T] = field(default_factory=list)
    echoed: int = 0  # lines dropped as repeats of the prompt
    problem: str = ""


def read_answer(section: Section[T], text: str, messages: Sequence[dict[str, str]]) -> Answer[T]:
    """The usable lines of a model's answer for one section; see the module doc."""
    prompt = _prompt_lines(messages)
    examples = {w for m in messages[:-1] for w in _norm(m["content"]).replace("/", " ").split()}
    own = {w for w in _norm(messages[-1]["content"]).split() if w not in _STOP} - examples
    borrowed = set(EXAMPLE_DOMAIN) - _stems(messages[-1]["content"])
    ans: Answer[T] = Answer()
    seen: set[Any] = set()
    for line in text.splitlines()[:40]:
        if not line.strip():
            continue
        if _is_echo(line, prompt, own):
            ans.echoed += 1
            continue
        item = section.parse(line)
        if item is None:
            if ans.items:
                break  # the block of usable lines has ended: what follows is rambling
            continue
        if _stems(section.ident(item)) & borrowed:  # named after the examples ('photo store', '/chats')
            ans.echoed += 1
            continue
        k = section.key(item)
        if k not in seen:
            seen.add(k)
            ans.items.append(item)
        if len(ans.items) >= section.cap:
            break
    if len(ans.items) < section.minimum:
        if not text.strip():
            ans.problem = "the answer was empty"
        elif not ans.items and ans.echoed:
            ans.problem = f"the answer repeated the prompt or its examples ({ans.echoed} line(s)) instead of answering"
        else:
            ans.problem = f"{len(ans.items)} usable line(s), at least {section.minimum} needed ({section.form})"
    return ans


# ---------------------------------------------------------------- the subjects, as the examples have them
def subject_of(project: str) -> str:
    """'fastapi app' -> 'a fastapi app': the project as the examples phrase theirs."""
    first = project.split()[0].lower() if project.split() else ""
    if first in ("a", "an", "the", "my", "our"):
        return project
    return ("an " if project[:1].lower() in "aeiou" else "a ") + project


def entity_subject(name: str) -> str:
    """The entity as the examples write theirs ('Photo'). With gemma-3-270m this decides the answer:
    'Fastapi' 9 times in 9 gave its own endpoints, 'fastapi' 0 of 4 and 'FastAPI' 0 of 4 (it copied
    the examples); 'TodoItem' 4 of 4."""
    if re.search(r"[A-Z]{2}", name):  # an acronym inside: FastAPI -> Fastapi
        return name.capitalize()
    return name[:1].upper() + name[1:]


# ---------------------------------------------------------------- asking the model
async def ask_section(
    llm: Any, ctx: Progress, section: Section[T], subjects: Sequence[str], tries: int = TRIES
) -> tuple[list[T], str]:
    """The section's items from the model (and the model's name); FillInFailed after ``tries`` answers.

    ``subjects``: what to ask about on each try (the last one is repeated).
    """
    problem = ""
    for attempt in range(tries):
        subject = subjects[min(attempt, len(subjects) - 1)]
        messages = section.messages(subject, attempt)
        ctx.step(
            f"fill-in: asking for the {section.title} of {subject} (try {attempt + 1} of {tries})",
            phase="fill_in",
            section=section.title,
        )
        try:
            res = await llm.chat(
                messages, model="smart", max_tokens=MAX_TOKENS, temperature=TEMPERATURE, on_token=ctx.token
            )
        except LLMError as exc:
            raise TaskFailed(f"the model server failed: {exc}") from exc
        ctx.add_usage(res.usage)
        ans = read_answer(section, res.content, messages)
        if not ans.problem:
            ctx.step(
                f"fill-in: {section.title}: {len(ans.items)} line(s) from the model"
                + (f" ({ans.echoed} echoed line(s) dropped)" if ans.echoed else ""),
                phase="fill_in",
                section=section.title,
                ok="true",
            )
            return ans.items, res.usage.model
        problem = ans.problem
        ctx.step(
            f"fill-in: the {section.title} answer is unusable: {problem}",
            phase="fill_in",
            section=section.title,
            ok="false",
        )
    raise FillInFailed(f"the model could not fill in the {section.title} section ({tries} tries; last: {problem})")


@dataclass(frozen=True)
class FillIn:
    """The strategy as an object (what `strategies.for_profile` returns)."""

    tries: int = TRIES

    async def ask(self, llm: Any, ctx: Progress, section: Section[T], subjects: Sequence[str]) -> tuple[list[T], str]:
        return await ask_section(llm, ctx, section, subjects, self.tries)

    subject_of = staticmethod(subject_of)
    entity_subject = staticmethod(entity_subject)
