"""Benchmark: tiled FlashAttention (lmkit, plain PyTorch) vs naive attention vs torch's SDPA on CPU, and the
Triton kernel vs SDPA on a GPU when one is present.

    python bench/bench_attention.py            # CPU: N = 256 .. 4096, plus the GPU section if CUDA is available
    python bench/bench_attention.py --quick    # N = 256 .. 1024

Time: the fastest of a few repeats after a warm-up (forward, and forward + backward).
Peak memory, two independent measurements:

* ``tensor_peak``: :class:`lmkit.efficient.cost.TensorMemoryTracker`, the peak bytes of live tensors that aten ops
  allocate during the call (inputs excluded);
* ``rss_peak``: a fresh Python process builds the inputs, resets its peak resident set size (writing 5 to
  ``/proc/self/clear_refs``, Linux), runs the call once and reports ``VmHWM`` (peak RSS) minus the RSS
  before. It also sees allocator slack and kernel-internal buffers, so it is coarser, but it does not rely
  on anything in lmkit.

Naive attention stores the (B, H, N, N) scores and probabilities, so its peak grows like N²; the tiled
version keeps one (B, H, block, block) tile at a time, so its peak grows like N (Q, K, V, O, lse).
Results go to ``lmkit/book/results/attention.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from lmkit.book import results as book_results
from lmkit.efficient.cost import TensorMemoryTracker
from lmkit.efficient.flash import flash_attention, naive_attention

ROOT = Path(__file__).resolve().parents[1]
B, H, D, BLOCK = 1, 4, 64, 128
METHODS = {
    "naive": lambda q, k, v: naive_attention(q, k, v, is_causal=True),
    "tiled": lambda q, k, v: flash_attention(q, k, v, is_causal=True, block_q=BLOCK, block_k=BLOCK),
    "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
}


def inputs(n: int, grad: bool = False, device: str = "cpu", dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, n, D, generator=g).to(device, dtype).requires_grad_(grad) for _ in range(3)]


def best_time(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs after a warm-up: on a shared machine the minimum is the least noisy."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fwd_bwd(method, q, k, v):
    def run():
        q.grad = k.grad = v.grad = None
        method(q, k, v).sum().backward()
    return run


def tensor_peak(fn) -> int:
    with TensorMemoryTracker() as mem:
        fn()
    return mem.peak


RSS_CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
from bench.bench_attention import METHODS, inputs
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
torch.set_num_threads(1)
q, k, v = inputs({n})
open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
before = status("VmRSS:")
METHODS[{name!r}](q, k, v)
print(status("VmHWM:") - before)
"""


def rss_peak(name: str, n: int) -> int:
    """Growth of a fresh process's peak RSS during one forward call, in bytes (Linux: /proc/self/status)."""
    code = RSS_CHILD.format(root=str(ROOT), n=n, name=name)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) * 1024


def cpu_section(sizes: list[int], rss_sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        row: dict = {"n": n}
        repeats = 3 if n <= 1024 else 1
        for name, method in METHODS.items():
            q, k, v = inputs(n)
            with torch.no_grad():
                row[f"{name}_fwd_s"] = best_time(partial(method, q, k, v), repeats)
                row[f"{name}_tensor_peak"] = tensor_peak(partial(method, q, k, v))
            qg, kg, vg = inputs(n, grad=True)
            row[f"{name}_fwd_bwd_s"] = best_time(fwd_bwd(method, qg, kg, vg), repeats)
            row[f"{name}_fwd_bwd_tensor_peak"] = tensor_peak(fwd_bwd(method, qg, kg, vg))
            if n in rss_sizes:
                row[f"{name}_rss_peak"] = rss_peak(name, n)
        rows.append(row)
        mib = 2**20
        print(f"N={n:5d}  fwd time naive {row['naive_fwd_s'] * 1e3:8.1f} ms  tiled {row['tiled_fwd_s'] * 1e3:8.1f} ms"
              f"  sdpa {row['sdpa_fwd_s'] * 1e3:7.1f} ms | tiled/naive {row['tiled_fwd_s'] / row['naive_fwd_s']:5.2f}"
              f"  tiled/sdpa {row['tiled_fwd_s'] / row['sdpa_fwd_s']:5.2f}")
        print(f"         peak mem naive {row['naive_tensor_peak'] / mib:8.1f} MiB"
              f" tiled {row['tiled_tensor_peak'] / mib:8.2f} MiB sdpa {row['sdpa_tensor_peak'] / mib:6.2f} MiB"
              " | naive/tiled "
              f"{row['naive_tensor_peak'] / row['tiled_tensor_peak']:6.1f}"
              + (f"  (RSS: naive {row['naive_rss_peak'] / mib:.1f}, tiled {row['tiled_rss_peak'] / mib:.1f},"
                 f" sdpa {row['sdpa_rss_peak'] / mib:.1f} MiB)" if n in rss_sizes else ""))
    if len(rows) >= 3:  # how the peak's increments grow: x2 per doubling of N = linear, x4 = quadratic
        a, b, c = rows[-3:]
        for name in METHODS:
            key = f"{name}_tensor_peak"
            print(f"peak-memory increment ratio ({name}): {(c[key] - b[key]) / (b[key] - a[key]):.2f}"
                  f"  (N {a['n']} -> {b['n']} -> {c['n']}; 2 = linear, 4 = quadratic)")
    return rows


def gpu_section(sizes: list[int]) -> list[dict]:
    """Triton kernel vs SDPA in float16 on CUDA (time with CUDA events, peak with max_memory_allocated)."""
    from lmkit.efficient.flash_triton import triton_flash_attention

    methods = {
        "triton": lambda q, k, v: triton_flash_attention(q, k, v, is_causal=True, block_m=64, block_n=64),
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }
    rows = []
    for n in sizes:
        row: dict = {"n": n}
        for name, method in methods.items():
            q, k, v = inputs(n, device="cuda", dtype=torch.float16)
            for _ in range(3):
                method(q, k, v)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start.record()
            for _ in range(10):
                method(q, k, v)
            end.record()
            torch.cuda.synchronize()
            row[f"{name}_fwd_ms"] = start.elapsed_time(end) / 10
            row[f"{name}_peak"] = torch.cuda.max_memory_allocated() - base
        rows.append(row)
        print(f"GPU N={n:6d}  triton {row['triton_fwd_ms']:.3f} ms  sdpa {row['sdpa_fwd_ms']:.3f} ms"
              f"  triton/sdpa {row['triton_fwd_ms'] / row['sdpa_fwd_ms']:.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 1024 only")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: on a shared machine, "
                        "multi-threaded timings of many small ops are dominated by thread-synchronisation stalls)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    print(f"CPU ({args.threads} thread(s)), float32, B={B}, H={H}, d={D}, causal, tiled blocks {BLOCK}x{BLOCK},"
          f" torch {torch.__version__}")
    result = {"config": {"B": B, "H": H, "d": D, "block": BLOCK, "dtype": "float32", "causal": True,
                         "threads": torch.get_num_threads(), "torch": torch.__version__},
              "cpu": cpu_section(sizes, rss_sizes=sizes[-2:]), "gpu": None}
    if torch.cuda.is_available():
        result["gpu"] = gpu_section([1024, 2048, 4096, 8192, 16384])
    else:
        print("No CUDA device: the Triton-vs-SDPA GPU section was skipped (the kernels are tested on CPU under "
              "TRITON_INTERPRET=1, which checks correctness, not speed).")
    out = book_results.path("attention")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
