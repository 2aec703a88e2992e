"""The package's layering: every module imports on its own (no import cycles), and the model needs no kernels."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


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
