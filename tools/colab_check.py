"""Run the chapters as Colab would: Colab's package versions, each chapter's own first cell, outside the checkout.

    python tools/colab_check.py                   # every chapter of _toc.yml (make colab-check)
    python tools/colab_check.py --chapters 01 10  # the install check and these chapters (what make test runs)

1. A virtual environment on Python 3.13 (Colab's; pyenv's interpreter here, or ``$COLAB_PYTHON``) gets the packages
   the chapters touch, at the versions of Colab's published freeze (``tools/colab/pip-freeze.gpu.txt``, used as pip
   constraints, so their dependencies take Colab's versions too). torch is PyPI's 2.11.0 (Colab's ``2.11.0+cu128`` is
   not on PyPI; same PyTorch release, and with no GPU here its CPU path runs).
2. A Jupyter kernel of that environment starts as Colab's does: ``google.colab`` imported at start-up (a stub), the
   working directory a fresh folder outside the checkout, and the repository URL of ``_config.yml`` resolved to this
   checkout by git's ``insteadOf`` (so the install cell installs the checkout's *committed* state).
3. Each chapter runs whole, its first cell included (the ``%pip install`` of lmkit). After the first chapter, the
   environment's ``pip freeze`` is compared with the one it was built with: any preinstalled package whose version
   changed fails the check (and the environment is rebuilt on the next run; what an install added is uninstalled).
   Any chapter that raises fails it too. Each chapter's time is printed and written to ``_build/colab_check.json``;
   a full run that passes also writes ``lmkit/book/results/colab_check.json`` and the table of ``book/how_to_use.md``.

Left out: Colab's GPU (the chapters' CUDA paths run on the device machine, not here) and its front end (the widgets are
checked to display in the kernel, not drawn in a browser).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

from lmkit.book import results as book_results

ROOT = Path(__file__).resolve().parents[1]
FREEZE = ROOT / "tools" / "colab" / "pip-freeze.gpu.txt"
VENV = ROOT / ".colab-venv"
# What the chapters and their kernel touch; everything these pull in takes the freeze's version as well.
PACKAGES = ["torch", "numpy", "matplotlib", "ipywidgets", "ipython", "ipykernel", "transformers", "tokenizers",
            "safetensors", "regex", "tqdm", "pyyaml", "requests", "packaging", "pip"]
TORCH = "torch==2.11.0"  # PyPI's build of Colab's release (Colab: 2.11.0+cu128)


CUDA_STACK = ("nvidia-", "cuda-")
"""The GPU's binary libraries: Colab's belong to its CUDA 12.8 build of torch, PyPI's torch 2.11.0 brings CUDA 13's,
so these are left to torch (no GPU runs here)."""


def colab_pins() -> list[str]:
    """The freeze's ``name==version`` lines as pip constraints (direct URLs dropped; torch's local version dropped;
    the CUDA libraries left to torch)."""
    pins = []
    for line in FREEZE.read_text().splitlines():
        if line.startswith("#") or "==" not in line or " @ " in line or line.lower().startswith(CUDA_STACK):
            continue
        pins.append(TORCH if line.lower().startswith("torch==") else line.strip())
    return pins


def python313() -> str | None:
    """Colab's Python minor version: ``$COLAB_PYTHON``, pyenv's 3.13 or a ``python3.13`` on the PATH (None if none)."""
    if os.environ.get("COLAB_PYTHON"):
        return os.environ["COLAB_PYTHON"]
    root = os.environ.get("PYENV_ROOT", "~/.pyenv")
    found = sorted(Path(root).expanduser().glob("versions/3.13*/bin/python3.13"))
    return str(found[-1]) if found else shutil.which("python3.13")


def build_venv() -> Path:
    """The Colab-like environment as Colab ships it: built once per freeze file, and put back before every run (what
    an earlier run's install cell added is uninstalled; a changed preinstalled package rebuilds it)."""
    stamp, baseline, pins = VENV / ".freeze", VENV / ".preinstalled.json", colab_pins()
    python = VENV / "bin" / "python"
    if stamp.exists() and stamp.read_text() == "\n".join(pins):
        now, shipped = freeze(python), json.loads(baseline.read_text())
        if not changed(shipped, now):
            extra = sorted(set(now) - set(shipped))
            if extra:
                subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
            return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([python313() or sys.exit(NO_PYTHON), "-m", "venv", str(VENV)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(pins))
    pinned = [p for p in pins if p.split("==")[0].lower() in PACKAGES]
    subprocess.run([python, "-m", "pip", "install", "-q", "-c", constraints.name, *pinned], check=True)
    baseline.write_text(json.dumps(freeze(python)))
    stamp.write_text("\n".join(pins))
    return python


def freeze(python: Path) -> dict[str, str]:
    """``name -> version`` (or ``-> URL`` for a package installed from one, as lmkit is) of ``python``'s packages."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "==" in line or " @ " in line]
    pairs = (line.split("==" if "==" in line else " @ ", 1) for line in lines)
    return {name.strip().lower().replace("_", "-"): version.strip() for name, version in pairs}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Preinstalled packages whose version the install changed (or that it removed)."""
    return [f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(before.items()) if after.get(n) != v]


def colab_kernel(python: Path, work: Path) -> Path:
    """A kernelspec for ``python`` that starts like Colab's kernel; returns the folder to put on ``JUPYTER_PATH``."""
    stub = work / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("# Stand-in for Colab's module: its presence is what the install cell tests.\n")
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # noqa: F401  (Colab imports it when a kernel starts)\n")
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    (work / "gitconfig").write_text(f'[url "file://{ROOT}"]\n\tinsteadOf = {url}\n')
    env = {"PYTHONPATH": str(work / "stub"), "IPYTHONDIR": str(work / "ipython"),
           "GIT_CONFIG_GLOBAL": str(work / "gitconfig"), "LMKIT_STATIC": "0", "MPLBACKEND": "agg"}
    spec = work / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Colab-like", "language": "python",
                                                  "env": env}))
    return work / "jupyter"


def run_chapter(path: Path, work: Path) -> float:
    """Execute one chapter in a fresh folder outside the checkout; return its wall time in seconds."""
    folder = work / path.stem
    folder.mkdir()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="colab", timeout=900, resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def chapters(selected: list[str]) -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ROOT / f"{c['file']}.ipynb" for part in toc["parts"] for c in part["chapters"]
             if c["file"].startswith("notebooks/")]
    return [f for f in files if not selected or f.name[:2] in selected]


NO_PYTHON = "colab_check: no Python 3.13, Colab's (install it with pyenv, or set COLAB_PYTHON to one)"
PAGE = ROOT / "book" / "how_to_use.md"
TABLE = re.compile(r"(<!-- table colab -->\n).*?(<!-- end table -->)", re.S)


def render_table(run: dict) -> str:
    """The page's table of chapter times from a full run's JSON (``lmkit/book/results/colab_check.json``)."""
    rows = [(name, r["seconds"]) for name, r in run["chapters"].items() if name != "install"]
    lines = ["| chapter | seconds |", "|---|---:|", *(f"| {name} | {seconds:.0f} |" for name, seconds in rows)]
    installed = ", ".join(f"`{n}`" for n in run["chapters"]["install"]["installed"])
    return "\n".join(lines) + f"\n\nThe install cell installed {installed} and changed nothing else.\n"


def render_page(run: dict, page: Path = PAGE) -> str:
    """``page`` with its ``<!-- table colab -->`` block filled from ``run``."""
    text = page.read_text()
    if not TABLE.search(text):
        raise KeyError(f"{page} has no <!-- table colab --> ... <!-- end table --> block")
    return TABLE.sub(lambda m: m.group(1) + render_table(run) + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", nargs="*", default=[], help="chapter numbers (default: all)")
    parser.add_argument("--optional", action="store_true",
                        help="without a Python 3.13, say so and pass (never under CI=true, where it must run)")
    args = parser.parse_args()
    if args.optional and python313() is None and os.environ.get("CI") != "true":
        print(f"{NO_PYTHON}: the Colab check is skipped on this machine")
        return 0
    python = build_venv()
    before, report, failed = json.loads((VENV / ".preinstalled.json").read_text()), {}, False
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        work = Path(tmp)
        os.environ["JUPYTER_PATH"] = str(colab_kernel(python, work))
        for i, path in enumerate(chapters(args.chapters)):
            try:
                report[path.stem] = {"seconds": round(run_chapter(path, work), 1)}
            except Exception as err:  # report every chapter, then fail
                report[path.stem], failed = {"error": f"{type(err).__name__}: {str(err)[-2000:]}"}, True
            if i == 0:
                after = freeze(python)
                moved = changed(before, after)
                report["install"] = {"changed_preinstalled": moved, "installed": sorted(set(after) - set(before))}
                failed |= bool(moved)
            print(path.stem, report[path.stem], flush=True)
    print("install cell:", report.get("install"))
    run = {"python": Path(python313() or "").name, "freeze": FREEZE.name, "chapters": report}
    if not args.chapters and not failed:  # a full, passing run is what the book reports
        book_results.path("colab_check").write_text(json.dumps(run, indent=1) + "\n")
        PAGE.write_text(render_page(run))
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "colab_check.json").write_text(json.dumps(run, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
