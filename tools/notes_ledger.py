"""The ledger of the notes' claims, ``book/notes_claims.yml``, and everything rendered from it.

The book is built from the study notes in ``../shared/notes/`` (beside the repository). The ledger holds one entry
per claim, definition and open question of those notes::

    - id: 004-nf4-quantile                  # stable slug: the note's number, then a name
      file: 004_a254d8ecf31cbf6c.txt        # the note the quote comes from
      quote: the kth value is the kth quantile of the source tensor.   # verbatim (whitespace-normalised)
      verdict: wrong                        # right | imprecise | wrong | question
      answer: NF4's 16 levels are quantiles of a standard normal ...   # what is true, with the number
      where: {file: notebooks/08_int8_and_nf4.ipynb, section: "NF4: levels at normal quantiles"}

From it come (one source of truth) the correction and clarification boxes of the chapters (:func:`render_box`,
written into the notebooks by ``python tools/nbtools.py boxes``) and the page "What the notes say, checked"
(:func:`render_page`, ``python tools/nbtools.py page``). ``tests/book/test_notes_claims.py`` checks every quote against
the notes, every ``where`` against the chapters, and every box and the page against the ledger.

A quote's section is found, not typed: it is the heading of the notes above the quote (``#`` lines; in the paper
timeline, which has no headings, the first line after each ``----`` rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / "book" / "notes_claims.yml"
PAGE = ROOT / "book" / "notes_checked.md"
VERDICTS = ("right", "imprecise", "wrong", "question")
# The README's order: the most complete version first, then the earlier ones, then the two other notes.
FILE_ORDER = ("004", "000", "001", "002", "003")
FILE_TITLES = {
    "004": "the most complete version",
    "000": "an earlier, shorter version",
    "001": "another earlier version",
    "002": "LLaMA, tokenizers, attention Q&A, decoding",
    "003": "a paper timeline",
}
BOX_TITLES = {
    "wrong": "Correction to the notes",
    "imprecise": "Correction to the notes",
    "right": "Clarification of the notes",
    "question": "A question of the notes, answered",
}
BOX_CLASS = {"wrong": "warning", "imprecise": "warning", "right": "note", "question": "tip"}
BOX_MARKER = "<!-- notes-box {id}: written from book/notes_claims.yml by `python tools/nbtools.py boxes` -->"
BOX_RE = re.compile(r"<!-- notes-box (?P<id>[^:\s]+):[^\n]*-->\n:::\{admonition\}[^\n]*\n.*?\n:::(?=\n|$)", re.S)


def notes_dir() -> Path:
    """``<repo>/../shared/notes``; a clear error if it is missing (the notes are not part of the repository)."""
    path = ROOT.parent / "shared" / "notes"
    if not path.is_dir() or not list(path.glob("*.txt")):
        raise FileNotFoundError(
            f"the study notes are not at {path}: the book is checked against them, so put the five notes files "
            "(000_*.txt ... 004_*.txt and their README.md) in shared/notes/ beside the repository checkout"
        )
    return path


def normalise(text: str) -> str:
    """Whitespace-normalised text: every run of spaces, tabs and newlines becomes one space."""
    return " ".join(text.split())


def load_notes() -> dict[str, str]:
    """The notes' text by file name, whitespace-normalised."""
    return {p.name: normalise(p.read_text(encoding="utf-8")) for p in sorted(notes_dir().glob("*.txt"))}


def load_ledger(path: Path = LEDGER) -> list[dict]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a YAML list of entries")
    return entries


@dataclass(frozen=True)
class Section:
    """A section of one note: its title and its span ``[start, end)`` in the whitespace-normalised text."""

    title: str
    start: int
    end: int


_IMG = re.compile(r"<img[^>]*>")
_LINK = re.compile(r"\[([^\]]*)\]\s*(\([^)]*\)|\[[^\]]*\])")


def _heading_title(line: str) -> str:
    """``## **Top-K Sampling**: 这种方法…`` → ``Top-K Sampling``; ``[GPT-1](url)`` → ``GPT-1``; images dropped."""
    text = _IMG.sub("", line).lstrip("#").strip()
    bold = re.match(r"(?:\d+\.\s*)?\*\*(.+?)\*\*", text)
    if bold:
        return bold.group(1).strip()
    return _LINK.sub(r"\1", text).strip()


def sections(file: str, raw: str) -> list[Section]:
    """The sections of note ``file`` (raw text ``raw``), in order.

    Image-only headings belong to the section above; a heading with nothing under it but a deeper heading is merged
    into that one (``Pretraining › Pre-training objectives › Denoising objective``).
    """
    timeline = not any(line.startswith("#") for line in raw.splitlines())  # 003: sections between ---- rules
    heads: list[list] = []  # [offset, title, level, bare], bare: the heading line holds nothing but its title
    offset, previous_rule, body = 0, True, False
    for line in raw.splitlines():
        stripped = line.strip()
        rule = bool(re.fullmatch(r"-{3,}", stripped))
        if timeline:
            is_heading, level = bool(stripped) and previous_rule and not rule, 1
            previous_rule = rule or (previous_rule and not stripped)
        else:
            is_heading = line.startswith("#") or bool(re.match(r"\d+\.\s+\*\*", line))
            level = len(line) - len(line.lstrip("#")) if line.startswith("#") else 7
        title = _heading_title(line) if is_heading else ""
        if title:
            bare = normalise(_IMG.sub("", line).lstrip("#")).strip("* ") == title
            if heads and not body and heads[-1][3] and level > heads[-1][2]:
                heads[-1][1:] = [f"{heads[-1][1]} › {title}", level, bare]
            else:
                heads.append([offset, title, level, bare])
            body = False
        elif stripped and not (line.startswith("#") and not _heading_title(line)):
            body = True
        if stripped:
            offset += len(normalise(line)) + 1
    total = len(normalise(raw))
    if not heads or heads[0][0] > 0:
        heads.insert(0, [0, "(before the first heading)", 0, False])
    return [Section(title, start, heads[i + 1][0] if i + 1 < len(heads) else total)
            for i, (start, title, _, _) in enumerate(heads)]


def locate(entry: dict, notes: dict[str, str]) -> tuple[int, int] | None:
    """Span of the entry's quote in its note (first occurrence), or None when it is not verbatim there."""
    text = notes.get(entry["file"])
    if text is None:
        return None
    start = text.find(normalise(entry["quote"]))
    return None if start < 0 else (start, start + len(normalise(entry["quote"])))


def section_of(entry: dict, notes: dict[str, str], raw: dict[str, str]) -> Section:
    start, _ = locate(entry, notes)
    return [s for s in sections(entry["file"], raw[entry["file"]]) if s.start <= start][-1]


def raw_notes() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(notes_dir().glob("*.txt"))}


def file_number(file: str) -> str:
    return file.split("_", 1)[0]


# ------------------------------------------------------------------------------------------------ rendering


def quote_markdown(quote: str) -> str:
    """The quote as one MyST paragraph that shows its words as written: markdown emphasis and ``$math$`` render,
    but nothing in it can become a heading, a list, a table, a link or raw HTML."""
    text = normalise(quote)
    text = re.sub(r"([\[\]<>|`])", r"\\\1", text)
    if re.match(r"[#\-+*>]|\d+\.", text) and not text.startswith("**"):
        text = "\\" + text
    return text


def render_box(entry: dict, section: str) -> str:
    """The admonition of entry ``entry`` as it stands in a chapter's markdown cell."""
    verdict = entry["verdict"]
    return (
        BOX_MARKER.format(id=entry["id"]) + "\n"
        f":::{{admonition}} {BOX_TITLES[verdict]}\n"
        f":class: {BOX_CLASS[verdict]}\n"
        f"The notes (file {file_number(entry['file'])}, *{section}*) say:\n\n"
        f"> {quote_markdown(entry['quote'])}\n\n"
        f"{normalise(entry['answer'])}\n"
        ":::"
    )


def heading_slug(title: str) -> str:
    """The anchor MyST gives a heading (``myst_heading_anchors``): as myst-parser's ``compute_unique_slug``, only the
    text and inline code count (``$math$`` is dropped); spaces become ``-``, then other punctuation goes.
    ``Masks: $-\\infty$ versus $-10000$`` → ``masks--versus-``."""
    text = re.sub(r"\$[^$]*\$", "", title).replace("`", "")
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", text.lower().replace(" ", "-"))


def markdown_headings(source: str) -> list[str]:
    """The ATX headings of a markdown text, outside code fences (as MyST sees them)."""
    headings, fenced = [], False
    for line in source.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            headings.append(match.group(1))
    return headings


def chapter_headings(file: str) -> list[str]:
    """Every heading of a chapter: a notebook's markdown cells or a Markdown page, relative to the repository."""
    path = ROOT / file
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return [h for c in nb.cells if c.cell_type == "markdown" for h in markdown_headings(c.source)]
    return markdown_headings(path.read_text(encoding="utf-8"))


def chapter_title(file: str) -> str:
    return chapter_headings(file)[0]


def render_page(entries: list[dict] | None = None) -> str:
    """The page "What the notes say, checked": every entry, grouped by note file and section, in the notes' order."""
    entries = load_ledger() if entries is None else entries
    notes, raw = load_notes(), raw_notes()
    counts = {v: sum(e["verdict"] == v for e in entries) for v in VERDICTS}
    out = [
        "# What the notes say, checked",
        "",
        "<!-- Generated from book/notes_claims.yml by `python tools/nbtools.py page`; edit the ledger, not this. -->",
        "",
        "The book is built from a set of study notes, five files (see {doc}`how_to_use`). This page lists every "
        "claim, definition and open question of those notes, quoted word for word, with a verdict, the answer and "
        "the chapter section that shows it; the correction and clarification boxes of the chapters are written from "
        f"the same entries. {len(entries)} entries: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".",
        "",
        "| verdict | meaning |",
        "|---|---|",
        "| right | the notes say it correctly; the chapter adds a clarification where useful |",
        "| imprecise | true in part, or true with a condition the notes leave out |",
        "| wrong | the notes' statement (or name, or number) is false |",
        "| question | an open question or an empty heading of the notes, answered |",
        "",
    ]
    order = {n: i for i, n in enumerate(FILE_ORDER)}
    by_file: dict[str, list[dict]] = {}
    for e in entries:
        by_file.setdefault(e["file"], []).append(e)
    for file in sorted(by_file, key=lambda f: order.get(file_number(f), 99)):
        number = file_number(file)
        out += [f"## Notes file {number}: {FILE_TITLES.get(number, file)}", "", f"`{file}`", ""]
        items = sorted(by_file[file], key=lambda e: locate(e, notes)[0])
        current = None
        for e in items:
            section = section_of(e, notes, raw).title
            if section != current:
                out += [f"### {number} · {section}", ""]
                current = section
            where = e["where"]
            target = Path(where["file"])
            link = f"../{target.with_suffix('')}{target.suffix}#{heading_slug(where['section'])}"
            title = chapter_title(where["file"])
            label = title if where["section"] == title else f"{title}: {where['section']}"
            out += [
                f"> {quote_markdown(e['quote'])}",
                "",
                f"**{e['verdict']}** — {normalise(e['answer'])}",
                "",
                f"→ [{label}]({link})",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
