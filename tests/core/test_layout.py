"""The package's layering: every module imports on its own (no import cycles), the model needs no kernels, the core
never imports the book's layer and needs neither matplotlib nor ipywidgets."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import lmkit

# One fresh interpreter for all modules (torch is imported once); lmkit's modules are dropped between imports, so
# each module is imported first, the way a cycle would show up.
_IMPORT_EACH = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import lmkit
    names = sorted(m.name for m in pkgutil.walk_packages(lmkit.__path__, "lmkit."))
    failed = []
    for name in names:
        for loaded in [m for m in sys.modules if m == "lmkit" or m.startswith("lmkit.")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except Exception as err:  # report every failure, not only the first
            failed.append(f"{name}: {type(err).__name__}: {err}")
    print(len(names))
    print("\\n".join(failed))
    """
)


def _run_with(python: str | Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _run(code: str) -> str:
    return _run_with(sys.executable, code)


def test_every_module_imports_first():
    count, *failed = _run(_IMPORT_EACH).strip().split("\n")
    assert int(count) > 40, "walk_packages found too few lmkit modules"
    assert [f for f in failed if f] == []


def test_the_model_does_not_import_efficient_attention_or_triton():
    out = _run(
        "import sys, lmkit.transformer.model, lmkit.decoding, lmkit.loaders.smollm2\n"
        "print(sorted(m for m in sys.modules if m.startswith(('lmkit.efficient', 'triton'))))"
    )
    assert out.strip() == "[]"


def _core_modules() -> list[Path]:
    package = Path(lmkit.__file__).parent
    return sorted(p for p in package.rglob("*.py") if "book" not in p.relative_to(package).parts)


def _imported_names(path: Path) -> list[str]:
    """Every module name an ``import`` statement of ``path`` names (top level or inside a function)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_core_never_imports_the_book_layer():
    """lmkit.book may import the core; no module outside it imports lmkit.book, at any depth of the file."""
    offenders = [
        f"{path.relative_to(Path(lmkit.__file__).parent)}: {name}"
        for path in _core_modules()
        for name in _imported_names(path)
        if name == "lmkit.book" or name.startswith("lmkit.book.")
    ]
    assert len(_core_modules()) > 60 and offenders == []


def test_the_core_imports_in_a_venv_without_matplotlib_or_ipywidgets(tmp_path):
    """``import lmkit`` and every core module work where the ``book`` extra is not installed: a venv whose
    site-packages holds every installed package except matplotlib and the widgets."""
    import sysconfig
    import venv

    venv.EnvBuilder(with_pip=False).create(tmp_path)
    python = tmp_path / "bin" / "python"
    target = Path(_run_with(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    left_out = ("matplotlib", "mpl_toolkits", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "__editable__")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(left_out) and not entry.name.startswith("lmkit"):
            (target / entry.name).symlink_to(entry)
    (target / "lmkit_checkout.pth").write_text(str(Path(lmkit.__file__).parents[1]) + "\n")
    code = (
        "import importlib, pkgutil, lmkit\n"
        "for info in pkgutil.walk_packages(lmkit.__path__, 'lmkit.'):\n"
        "    if not info.name.startswith('lmkit.book'):\n"
        "        importlib.import_module(info.name)\n"
        "try:\n"
        "    import matplotlib\n"
        "except ImportError:\n"
        "    print('no matplotlib')\n"
    )
    assert _run_with(python, code).strip() == "no matplotlib"
