"""Create chapter notebooks with the book's two standard first cells.

    python tools/nbtools.py new notebooks/NN_name.ipynb "Chapter title"
    python tools/nbtools.py clear notebooks/*.ipynb      # strip outputs before committing
    python tools/nbtools.py sync notebooks/*.ipynb       # rewrite the install cell after the repository URL changed
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
    "from lmkit.utils import interact, pick_device, seed_everything, show_source\n"
    "\n"
    "seed_everything(0)\n"
    "device = pick_device()\n"
    "print(device)"
)


def new_notebook(title: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}"),
        nbformat.v4.new_code_cell(install_cell_source()),
        nbformat.v4.new_code_cell(SETUP_CELL),
    ]
    return nb


def clear(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "new":
        nbformat.write(new_notebook(argv[2]), argv[1])
    elif argv and argv[0] in ("clear", "sync"):
        for path in argv[1:]:
            nb = nbformat.read(path, as_version=4)
            if argv[0] == "sync":
                nb.cells[1].source = install_cell_source()
            nbformat.write(clear(nb), path)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
