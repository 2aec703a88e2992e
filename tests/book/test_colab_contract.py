"""The Colab contract, checked without Colab: every requirement of lmkit and of its ``book`` extra admits the version
that Colab ships (its published freeze, ``tools/colab/pip-freeze.gpu.txt``), so the chapters' install cell upgrades
nothing Colab has already imported (an upgraded ipywidgets needs a runtime restart, and Colab does not support 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def colab_versions() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "tools" / "colab" / "pip-freeze.gpu.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#") and " @ " not in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["book"]]


def test_the_freeze_is_colabs_python_313_image():
    pins = colab_versions()
    assert len(pins) > 500 and str(pins["ipywidgets"]) == "7.7.1" and str(pins["torch"]) == "2.11.0+cu128"


@pytest.mark.parametrize("requirement", requirements(), ids=str)
def test_every_requirement_admits_what_colab_ships(requirement: Requirement):
    shipped = colab_versions().get(canonicalize_name(requirement.name))
    if shipped is None:  # Colab lacks it (gguf): the install cell installs it, changing nothing Colab has
        return
    assert requirement.specifier.contains(shipped, prereleases=True), (
        f"{requirement} does not admit Colab's {requirement.name} {shipped}: the install cell would replace it"
    )


def test_the_check_fails_on_the_requirement_colab_cannot_take():
    """The check above, shown to fail: ipywidgets>=8 (what the book extra asked for until Colab was checked)."""
    assert not Requirement("ipywidgets>=8").specifier.contains(colab_versions()["ipywidgets"])


def test_the_results_chapters_plot_ship_with_the_package(tmp_path):
    """A wheel built from the checkout holds every results file, readable through ``lmkit.book.results`` from
    outside the checkout: on Colab there is no clone to read ``bench/`` output from."""
    import subprocess
    import sys
    import zipfile

    from lmkit.book import results

    assert len(results.names()) >= 9 and "gptq_awq" in results.names()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lmkit-*.whl")
    shipped = {Path(n).stem for n in zipfile.ZipFile(wheel).namelist() if n.startswith("lmkit/book/results/")}
    assert set(results.names()) <= shipped


def test_missing_results_name_the_benchmark_that_writes_them():
    from lmkit.book import results

    with pytest.raises(FileNotFoundError, match=r"no results named 'nope' .*python bench/bench_nope.py"):
        results.load("nope")
    with pytest.raises(ValueError, match="named by its benchmark"):
        results.path("../gptq_awq")


def test_the_chapter_times_on_the_page_are_the_last_full_colab_check():
    """book/how_to_use.md's table is written by a full `make colab-check` from its JSON, never typed, and covers
    every chapter of _toc.yml."""
    import importlib.util

    import yaml

    from lmkit.book import results

    spec = importlib.util.spec_from_file_location("colab_check", ROOT / "tools" / "colab_check.py")
    colab_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(colab_check)
    run = results.load("colab_check")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = {Path(c["file"]).name for part in toc["parts"] for c in part["chapters"] if "notebooks/" in c["file"]}
    assert chapters <= set(run["chapters"]) and run["chapters"]["install"]["changed_preinstalled"] == []
    assert colab_check.render_page(run) == (ROOT / "book" / "how_to_use.md").read_text(), (
        "run `make colab-check` (or render the page from lmkit/book/results/colab_check.json)"
    )
