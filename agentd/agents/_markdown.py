"""Sections of the Markdown documents agents write (architecture, design): find and check them."""

from __future__ import annotations

import re

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def section_bodies(doc: str) -> dict[str, str]:
    """{heading text: body} of the document's sections (any heading level)."""
    heads = list(_HEADING.finditer(doc))
    out = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(doc)
        out[m.group(2).strip()] = doc[m.end() : end].strip()
    return out


def find_section(sections: dict[str, str], pattern: re.Pattern[str]) -> tuple[str, str] | None:
    """The first section whose title matches, preferring one with a body (a document title such as
    '# Todo API' matches too, but the '## API' section below it is the one meant)."""
    found = [(t, b) for t, b in sections.items() if pattern.search(re.sub(r"^[\d.\s]+", "", t))]
    return next(((t, b) for t, b in found if len(b) >= 10), found[0] if found else None)


def missing_sections(doc: str, name: str, required: dict[str, re.Pattern[str]]) -> list[str]:
    """Problems of document ``name``: nearly empty, or a required section absent or empty."""
    if len(doc.strip()) < 80:
        return [f"{name} is empty or nearly empty"]
    problems = []
    sections = section_bodies(doc)
    for title, pattern in required.items():
        found = find_section(sections, pattern)
        if found is None:
            problems.append(f"{name} has no '## {title}' section")
        elif len(found[1]) < 10:
            problems.append(f"the '{found[0]}' section of {name} is empty")
    return problems
