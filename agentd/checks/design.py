"""The designer's checks that no model wrote: colour contrast computed by the WCAG 2 formula,
and each SVG mock-up rendered to a PNG preview by a real renderer.

Contrast: WCAG 2.x relative luminance and contrast ratio (4.5:1 for normal text, level AA).
It is computed from what the design *draws*, not from what it says:

- the palette: every colour whose role names text (text, foreground, ink, heading, label) against
  every colour whose role names a background (background, surface, canvas, page); when the roles
  are not named, the palette's best pair must reach 4.5:1 (there is at least one readable pair);
- each mock-up: every ``<text>`` with a fill, against the fill of the last shape drawn before it
  that covers its anchor point (a ``rect`` with x, y, width and height, or the whole canvas).

Rendering: ``rsvg-convert`` (Debian's librsvg2-bin) turns ``mockups/NAME.svg`` into
``mockups/NAME.png``; without it the check is skipped and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from orchgpt.checks import FAILED, PASSED, SKIPPED, Check

AA_NORMAL = 4.5
RENDERER = "rsvg-convert"
RENDER_TIMEOUT_S = 30.0
SVG_NS = "{http://www.w3.org/2000/svg}"
_HEX = re.compile(r"#([0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")
_TEXT_ROLE = re.compile(r"\b(text|foreground|ink|headings?|labels?|body copy|copy)\b", re.I)
_BG_ROLE = re.compile(r"\b(background|surface|canvas|page|backdrop)\b", re.I)
_NAMED = {"white": "#FFFFFF", "black": "#000000"}


def parse_colour(value: str | None) -> tuple[int, int, int] | None:
    """(r, g, b) of a ``#rgb``/``#rrggbb`` (or white/black); None for anything else."""
    if not value:
        return None
    v = _NAMED.get(value.strip().lower(), value.strip())
    m = _HEX.fullmatch(v) if v.startswith("#") else None
    if not m:
        return None
    h = m.group(1)
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance."""

    def lin(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio, 1.0 to 21.0."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


@dataclass(frozen=True)
class Pair:
    where: str  # "palette" or the mock-up's path and the text drawn
    fg: tuple[int, int, int]
    bg: tuple[int, int, int]

    @property
    def ratio(self) -> float:
        return contrast(self.fg, self.bg)

    def __str__(self) -> str:
        return f"{self.where}: {_hex(self.fg)} on {_hex(self.bg)} is {self.ratio:.2f}:1"


def palette_pairs(palette_lines: list[str]) -> tuple[list[Pair], str]:
    """The text/background pairs the palette names, and a note when it names none."""
    fgs, bgs, allc = [], [], []
    for line in palette_lines:
        for m in _HEX.finditer(line):
            rgb = parse_colour("#" + m.group(1))
            assert rgb is not None
            role = line.replace(m.group(0), " ")
            allc.append(rgb)
            if _TEXT_ROLE.search(role):
                fgs.append(rgb)
            elif _BG_ROLE.search(role):
                bgs.append(rgb)
    if fgs and bgs:
        return [Pair("palette", f, b) for f in fgs for b in bgs], ""
    if len(allc) < 2:
        return [], "the palette has fewer than two colours"
    best = max(((f, b) for f in allc for b in allc if f != b), key=lambda p: contrast(*p))
    return [Pair("palette (best pair; text and background roles not named)", *best)], ""


def _num(el: ET.Element, key: str, default: float | None = None) -> float | None:
    raw = (el.get(key) or "").strip().removesuffix("px")
    try:
        return float(raw)
    except ValueError:
        return default


def _fill(el: ET.Element) -> tuple[int, int, int] | None:
    style = dict(kv.split(":", 1) for kv in (el.get("style") or "").replace(" ", "").split(";") if ":" in kv)
    return parse_colour(style.get("fill") or el.get("fill"))


def svg_pairs(name: str, text: str) -> list[Pair]:
    """Each text with a fill in the mock-up against what is drawn under its anchor point."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []  # the designer's own SVG check reports it
    pairs: list[Pair] = []
    under: list[tuple[tuple[float, float, float, float] | None, tuple[int, int, int]]] = []
    for el in root.iter():
        tag = el.tag.removeprefix(SVG_NS)
        fill = _fill(el)
        if tag == "rect" and fill is not None:
            if (el.get("width"), el.get("height")) == ("100%", "100%"):
                under.append((None, fill))  # the whole canvas
            elif (w := _num(el, "width")) and (h := _num(el, "height")):
                under.append(((_num(el, "x", 0.0) or 0.0, _num(el, "y", 0.0) or 0.0, w, h), fill))
        elif tag == "text" and fill is not None:
            tx, ty = _num(el, "x", 0.0) or 0.0, _num(el, "y", 0.0) or 0.0
            bg = next(
                (
                    c
                    for box, c in reversed(under)
                    if box is None or (box[0] <= tx <= box[0] + box[2] and box[1] <= ty <= box[1] + box[3])
                ),
                None,
            )
            words = " ".join("".join(el.itertext()).split())[:30]
            pairs.append(Pair(f"{name} text {words!r}", fill, bg or (255, 255, 255)))
    return pairs


def contrast_check(palette_lines: list[str], mockups: dict[str, str]) -> tuple[Check, list[str]]:
    """The contrast check, and the problems to give back to the model."""
    pairs, note = palette_pairs(palette_lines)
    for name, text in mockups.items():
        pairs += svg_pairs(name, text)
    if not pairs:
        return Check("contrast", "WCAG 2 formula", SKIPPED, note or "no colour pairs to check"), []
    low = [p for p in pairs if p.ratio < AA_NORMAL]
    if low:
        problems = [f"contrast too low for text (WCAG AA needs {AA_NORMAL}:1): {p}" for p in low[:10]]
        detail = f"{len(low)} of {len(pairs)} pair(s) below {AA_NORMAL}:1; worst: " + str(
            min(low, key=lambda p: p.ratio)
        )
        return Check("contrast", "WCAG 2 formula", FAILED, detail), problems
    worst = min(pairs, key=lambda p: p.ratio)
    detail = f"{len(pairs)} pair(s) at least {AA_NORMAL}:1; lowest {worst}"
    return Check("contrast", "WCAG 2 formula", PASSED, detail), []


def render_check(root: Path, mockups: list[str]) -> tuple[Check, list[str]]:
    """Render each ``mockups/NAME.svg`` to ``mockups/NAME.png``; the check and the PNGs made."""
    tool = shutil.which(RENDERER)
    if tool is None:
        why = f"{RENDERER} is not installed (Debian: librsvg2-bin)"
        return Check("render", RENDERER, SKIPPED, why, required=False), []
    made, failed = [], []
    for rel in mockups:
        src = root / rel
        dst = src.with_suffix(".png")
        try:
            r = subprocess.run(
                [tool, "--format=png", "--output", str(dst), str(src)],
                capture_output=True,
                text=True,
                timeout=RENDER_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            failed.append(f"{rel}: no image within {RENDER_TIMEOUT_S:g}s")
            continue
        ok = r.returncode == 0 and dst.is_file() and dst.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if ok:
            made.append(str(dst.relative_to(root)))
        else:
            failed.append(f"{rel}: {(r.stderr or r.stdout).strip().splitlines()[-1:] or 'no PNG'}")
    if failed:
        return Check("render", RENDERER, FAILED, "; ".join(failed)), made
    return Check("render", RENDERER, PASSED, f"{len(made)} mock-up(s) rendered to PNG"), made
