"""CMake flags that build llama.cpp (llama-cpp-python) for the CPU it runs on, with AMX always off.

llama.cpp's default ``-march=native`` turns on AMX wherever the CPU lists it, and these VMs list AMX but do not
allow it (the first eval segfaults). Forcing a fixed instruction set instead (AVX-512, say) dies with SIGILL on the
many machines without it (most laptops, GitHub's hosted runners). So the flags are read from the CPU itself: each
instruction-set extension ggml can use is switched on exactly when ``/proc/cpuinfo`` lists it, and AMX never::

    python tools/llama_cpp_flags.py                  # this machine
    python tools/llama_cpp_flags.py --flags "avx avx2 fma f16c bmi2 sse4_2"   # an x86-64-v3 CPU

Off x86 (ARM, say) or without ``/proc/cpuinfo`` it prints ``-DGGML_NATIVE=ON``: there is no AMX to avoid.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

# ggml option -> the /proc/cpuinfo flags it needs (all of them)
GGML_OPTIONS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),  # ggml passes all five -m flags
    "GGML_AVX512_VBMI": ("avx512f", "avx512vbmi"),
    "GGML_AVX512_VNNI": ("avx512f", "avx512_vnni"),
    "GGML_AVX512_BF16": ("avx512f", "avx512_bf16"),
}
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The ``flags`` of the first processor listed in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    raise ValueError("no 'flags' line in the cpuinfo text (not an x86 /proc/cpuinfo?)")


def cmake_args(flags: set[str]) -> list[str]:
    """``-D`` options for ggml: every extension in ``flags`` on, the others and AMX off, no ``-march=native``."""
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-DGGML_{name[5:]}={'ON' if set(need) <= flags else 'OFF'}" for name, need in GGML_OPTIONS.items()]
    args += [f"-D{name}=OFF" for name in ALWAYS_OFF]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", help="space-separated cpuinfo flags to build for, instead of this CPU's")
    ns = parser.parse_args()
    if ns.flags is not None:
        print(" ".join(cmake_args(set(ns.flags.split()))))
        return
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine().lower() not in ("x86_64", "amd64") or not cpuinfo.exists():
        print("-DGGML_NATIVE=ON")
        return
    print(" ".join(cmake_args(cpu_flags(cpuinfo.read_text()))))


if __name__ == "__main__":
    main()
