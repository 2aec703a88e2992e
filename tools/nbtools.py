"""Create chapter notebooks with the book's two standard first cells.

    python tools/nbtools.py new notebooks/NN_name.ipynb "Chapter title"
    python tools/nbtools.py clear notebooks/*.ipynb      # strip outputs before committing
    python tools/nbtools.py sync notebooks/*.ipynb       # rewrite the install cell after the repository URL changed
    python tools/nbtools.py tag notebooks/*.ipynb        # hide the install and import cells on the site
    python tools/nbtools.py boxes notebooks/*.ipynb      # rewrite every notes box from book/notes_claims.yml
    python tools/nbtools.py page                         # write book/notes_checked.md from book/notes_claims.yml
    python tools/nbtools.py execute CACHE                # run every chapter of _toc.yml into jupyter-cache CACHE
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def repository_url() -> str:
    """The repository URL: the single setting in ``_config.yml`` that the launch buttons use too."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def install_cell_source() -> str:
    return (
        "# On Colab, install lmkit and the book's extras from the repository (Colab keeps its own torch).\n"
        "# Elsewhere (`make lab`, the book build) lmkit is already installed.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "lmkit[book] @ git+{repository_url()}"'
    )


SETUP_CELL = (
    "from lmkit.book import interact, show_source\n"
    "from lmkit.utils import pick_device, seed_everything\n"
    "\n"
    "seed_everything(0)\n"
    "device = pick_device()\n"
    "print(device)"
)


INSTALL_TAGS = ["remove-cell"]
"""The Colab install cell is removed from the site (it does nothing there) but stays in the notebook."""
SETUP_TAGS = ["hide-input"]
"""Import/setup cells are folded on the site behind a "show code" toggle; their output (the device) stays."""


def is_import_cell(source: str) -> bool:
    """True for a code cell of nothing but imports (and blank lines or comments): it is folded on the site."""
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    starts = ("import ", "from ", ")", "torch.set_num_threads(")
    return bool(lines) and all(line.startswith(starts) or line.endswith(",") for line in lines)


def tag(cell: nbformat.NotebookNode, tags: list[str]) -> None:
    """Add ``tags`` to a cell's metadata (keeping the tags it has)."""
    have = cell.metadata.setdefault("tags", [])
    have.extend(t for t in tags if t not in have)


def new_notebook(title: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    install, setup = nbformat.v4.new_code_cell(install_cell_source()), nbformat.v4.new_code_cell(SETUP_CELL)
    tag(install, INSTALL_TAGS)
    tag(setup, SETUP_TAGS)
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), install, setup]
    return nb


def tag_setup_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Tag an existing chapter like :func:`new_notebook` does: the install cell, the setup cell, import-only cells."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    tag(code[0], INSTALL_TAGS)
    for cell in code[1:]:
        if cell.source == SETUP_CELL or "seed_everything(" in cell.source or is_import_cell(cell.source):
            if "interact(" not in cell.source.replace("import interact", ""):
                tag(cell, SETUP_TAGS)
    return nb


def clear(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def sync_boxes(nb: nbformat.NotebookNode) -> list[str]:
    """Rewrite every notes box of ``nb`` (see ``tools/notes_ledger.py``) from the ledger; returns the ids written."""
    import notes_ledger

    entries = {e["id"]: e for e in notes_ledger.load_ledger()}
    notes, raw = notes_ledger.load_notes(), notes_ledger.raw_notes()
    written = []

    def box(match):
        entry = entries.get(match["id"])
        if entry is None:
            raise SystemExit(f"a notes box names {match['id']!r}, which is not in {notes_ledger.LEDGER}")
        written.append(entry["id"])
        return notes_ledger.render_box(entry, notes_ledger.section_of(entry, notes, raw).title)

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = notes_ledger.BOX_RE.sub(box, cell.source)
    return written


def toc_notebooks() -> list[str]:
    """The ``.ipynb`` files of ``_toc.yml``, relative to the repository root, in book order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"], *(c["file"] for part in toc.get("parts", []) for c in part["chapters"])]
    return [f"{e}.ipynb" for e in entries if (ROOT / f"{e}.ipynb").exists()]


def execute_into_cache(cache_path: str, timeout: int = 600) -> None:
    """Execute every chapter of the TOC afresh into the jupyter-cache at ``cache_path``, one process per core (the
    book build, with ``execute_notebooks: cache``, then renders these outputs). Exits non-zero naming the chapters
    that failed, with their tracebacks."""
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    cache = get_cache(cache_path)
    cache.clear_cache()
    for path in toc_notebooks():
        cache.add_nb_to_project(str(ROOT / path))
    result = load_executor("local-parallel", cache).run_and_cache(timeout=timeout, force=True)
    failed = result.excepted + result.errored
    for record in cache.list_project_records():
        if record.uri in failed and record.traceback:
            print(f"--- {record.uri}\n{record.traceback}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} chapter(s) failed: {', '.join(failed)}")
    print(f"executed {len(result.succeeded)} chapters into {cache_path}")


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "execute":
        execute_into_cache(argv[1])
    elif argv == ["page"]:
        import notes_ledger

        notes_ledger.PAGE.write_text(notes_ledger.render_page(), encoding="utf-8")
    elif argv and argv[0] == "boxes":
        for path in argv[1:]:
            nb = nbformat.read(path, as_version=4)
            if sync_boxes(nb):
                nbformat.write(nb, path)
    elif len(argv) == 3 and argv[0] == "new":
        nbformat.write(new_notebook(argv[2]), argv[1])
    elif argv and argv[0] in ("clear", "sync", "tag"):
        for path in argv[1:]:
            nb = nbformat.read(path, as_version=4)
            if argv[0] == "sync":
                nb.cells[1].source = install_cell_source()
            if argv[0] == "tag":
                tag_setup_cells(nb)
            nbformat.write(clear(nb), path)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
