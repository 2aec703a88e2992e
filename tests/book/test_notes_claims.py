"""The ledger of the notes' claims (book/notes_claims.yml) against the notes, the chapters and the boxes.

The notes live outside the repository, in ``<repo>/../shared/notes/`` (CI clones the repository beside shared/).
Without them these tests fail, saying where the notes belong: the book must never be built unchecked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notes_ledger as nl  # noqa: E402

FIELDS = {"id", "file", "quote", "verdict", "answer", "where"}
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BOX_TITLE = re.compile(r":::\{admonition\}\s*(Correction|Clarification|A question) of the notes|"
                       r":::\{admonition\}\s*Correction to the notes")


@pytest.fixture(scope="module")
def notes() -> dict[str, str]:
    try:
        return nl.load_notes()
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def raw(notes) -> dict[str, str]:
    return nl.raw_notes()


@pytest.fixture(scope="module")
def ledger() -> list[dict]:
    return nl.load_ledger()


def test_missing_notes_folder_is_an_error_that_says_where(monkeypatch, tmp_path):
    monkeypatch.setattr(nl, "ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match=r"shared/notes"):
        nl.notes_dir()


def test_entries_have_the_ledger_fields(ledger, notes):
    problems = []
    ids = [e.get("id") for e in ledger]
    for e in ledger:
        name = e.get("id", e)
        if set(e) != FIELDS:
            problems.append(f"{name}: fields {sorted(set(e))}, expected {sorted(FIELDS)}")
            continue
        if not re.fullmatch(r"\d{3}-[a-z0-9-]+", e["id"]) or not e["file"].startswith(e["id"][:4].rstrip("-") + "_"):
            problems.append(f"{name}: the id must be the note's number then a slug, e.g. 004-nf4-quantile")
        if e["file"] not in notes:
            problems.append(f"{name}: no note named {e['file']!r} in {nl.notes_dir()}")
        if e["verdict"] not in nl.VERDICTS:
            problems.append(f"{name}: verdict {e['verdict']!r} is not one of {nl.VERDICTS}")
        if not isinstance(e["answer"], str) or len(e["answer"].split()) < 5:
            problems.append(f"{name}: the answer must say what is true")
        if not isinstance(e["where"], dict) or set(e["where"]) != {"file", "section"}:
            problems.append(f"{name}: where must be {{file: ..., section: ...}}")
        if "\n:::" in "\n" + e["answer"]:
            problems.append(f"{name}: an answer may not contain a line ':::' (it would close its box)")
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicated, f"duplicated ids: {duplicated}"
    assert not problems, "\n".join(problems)


def test_every_quote_is_verbatim_in_its_note(ledger, notes):
    missing = [f"{e['id']}: {e['quote']!r} is not in {e['file']} (whitespace-normalised)"
               for e in ledger if nl.locate(e, notes) is None]
    assert not missing, "\n".join(missing)


def test_every_section_of_every_note_has_an_entry(ledger, notes, raw):
    uncovered = []
    for file, text in raw.items():
        spans = [nl.locate(e, notes) for e in ledger if e["file"] == file]
        spans = [s for s in spans if s]
        for section in nl.sections(file, text):
            if not any(a < section.end and b > section.start for a, b in spans):
                uncovered.append(f"{file}: section {section.title!r}")
    assert not uncovered, "sections of the notes without a ledger entry:\n" + "\n".join(uncovered)


def test_every_where_names_an_existing_chapter_section(ledger):
    problems = []
    for e in ledger:
        path = ROOT / e["where"]["file"]
        if not path.is_file():
            problems.append(f"{e['id']}: {e['where']['file']} does not exist")
        elif e["where"]["section"] not in nl.chapter_headings(e["where"]["file"]):
            problems.append(f"{e['id']}: {e['where']['file']} has no heading {e['where']['section']!r}")
    assert not problems, "\n".join(problems)


def chapter_boxes() -> list[tuple[str, str, str]]:
    """(notebook, id, box text) for every notes box in the chapters."""
    found = []
    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                found += [(path.name, m["id"], m.group(0)) for m in nl.BOX_RE.finditer(cell.source)]
    return found


def test_boxes_name_ledger_ids_and_match_their_entries(ledger, notes, raw):
    entries = {e["id"]: e for e in ledger}
    problems = []
    for notebook, box_id, text in chapter_boxes():
        if box_id not in entries:
            problems.append(f"{notebook}: a box names {box_id!r}, which is not in book/notes_claims.yml")
            continue
        entry = entries[box_id]
        if text != nl.render_box(entry, nl.section_of(entry, notes, raw).title):
            problems.append(f"{notebook}: the box of {box_id} differs from its ledger entry "
                            "(run `python tools/nbtools.py boxes notebooks/*.ipynb`)")
    assert not problems, "\n".join(problems)


def test_every_box_about_the_notes_comes_from_the_ledger():
    strays = []
    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            outside = nl.BOX_RE.sub("", cell.source)
            if BOX_TITLE.search(outside) or "<!-- notes-box" in outside:
                strays.append(f"{path.name}: {cell.source[:80]!r}")
    assert not strays, "boxes about the notes that are not written from the ledger:\n" + "\n".join(strays)


def test_each_box_id_is_used_once():
    ids = [box_id for _, box_id, _ in chapter_boxes()]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_the_checked_page_is_rendered_from_the_ledger(ledger):
    assert nl.PAGE.is_file(), "book/notes_checked.md is missing: run `python tools/nbtools.py page`"
    assert nl.PAGE.read_text(encoding="utf-8") == nl.render_page(ledger), (
        "book/notes_checked.md differs from the ledger: run `python tools/nbtools.py page`")


def test_quotes_render_as_plain_paragraphs(ledger):
    for e in ledger:
        text = nl.quote_markdown(e["quote"])
        assert "\n" not in text and not re.match(r"[#\-+>|]|\d+\.", text), e["id"]
        assert not re.search(r"(?<!\\)[\[<|]", text), e["id"]  # no link, HTML or table syntax left


def test_section_finder_on_a_small_note():
    raw = "## A\ntext one\n### B\n#### C\nclaim\n## D\n"
    titles = [s.title for s in nl.sections("x.txt", raw)]
    assert titles == ["A", "B › C", "D"]
