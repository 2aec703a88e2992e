"""The mutation score of the last ``mutmut run``: killed / (total - equivalent), from mutmut's own results.

``make mutants`` runs mutmut over the core modules named in ``setup.cfg``, then this script. An *equivalent* mutant
changes nothing a caller can observe (e.g. ``transpose(+2, -1)`` for ``transpose(-2, -1)`` on 4-D tensors), so no
test can kill it; each is listed in ``tests/mutation_equivalent.md`` with its mutated line and the reason. mutmut
numbers mutants by position, so an edit of a module renumbers them: a listed mutant whose line no longer matches is
reported as *stale* (triage it again) and counted as an ordinary survivor, never as equivalent.

    python tools/mutation_score.py            # the numbers, the surviving non-equivalent mutants; exit 1 below 90 %
    python tools/mutation_score.py --min 0.95
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "tests" / "mutation_equivalent.md"
MUTMUT = [sys.executable, "-m", "mutmut"]
# a row of the list: | `lmkit.module.x_function__mutmut_N` | `text of the mutated line` | reason |
ROW = re.compile(r"^\|\s*`(?P<name>[\w.]+__mutmut_\d+)`\s*\|\s*`(?P<line>[^`]+)`\s*\|(?P<reason>.+)\|\s*$")


def results() -> dict[str, str]:
    """mutmut's status of every mutant of the last run (``killed``, ``survived``, ``timeout``, ...)."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    status = {}
    for line in out.stdout.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            status[name] = state
    return status


def equivalent_list(path: Path = EQUIVALENT) -> dict[str, str]:
    """The triaged equivalent mutants: name -> the mutated line's text, as written in the list."""
    rows = (ROW.match(line) for line in path.read_text().splitlines())
    return {m["name"]: m["line"].replace("\\|", "|").strip() for m in rows if m}  # a table cell writes | as \|


def mutated_line(name: str) -> str:
    """The added lines of ``mutmut show NAME``'s diff, joined (whitespace squeezed)."""
    diff = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " ".join(" ".join(added).split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=0.9, help="the score below which the exit status is 1")
    args = parser.parse_args()
    status = results()
    if not status:
        print("no mutmut results: run `mutmut run` first")
        return 1
    listed = equivalent_list()
    equivalent, stale = [], []
    for name, line in listed.items():
        if name not in status:
            stale.append(f"{name}: no such mutant in the last run")
        elif " ".join(line.split()) not in mutated_line(name):
            stale.append(f"{name}: its mutated line is no longer `{line}`")
        elif status[name] == "killed":
            stale.append(f"{name}: listed as equivalent but a test kills it; drop it from the list")
        else:
            equivalent.append(name)
    counts = collections.Counter(status.values())
    killed = counts["killed"]
    denominator = len(status) - len(equivalent)
    score = killed / denominator if denominator else 1.0
    print(f"mutants {len(status)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"equivalent (tests/mutation_equivalent.md) {len(equivalent)}")
    print(f"score = killed / (total - equivalent) = {killed} / {denominator} = {score:.1%}")
    for name in sorted(n for n, s in status.items() if s != "killed" and n not in equivalent):
        print(f"  not killed: {name} ({status[name]})")
    for line in stale:
        print(f"  stale: {line}")
    return 0 if score >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
