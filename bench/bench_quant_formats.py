"""SmolLM2 in seven weight formats and on lmkit's fast decoding paths: size, memory, perplexity, time per request.

    python bench/bench_quant_formats.py                    # every row: 16 32 128 new tokens, one thread
    python bench/bench_quant_formats.py --threads 1 2      # and again on two threads
    python bench/bench_quant_formats.py --new 16 --repeats 1 --out /tmp/trial.json   # a quick trial
    python bench/bench_quant_formats.py --hf-perplexity --formats F32 Q4_0   # add HF transformers' perplexity
    python bench/bench_quant_formats.py --render           # write the tables of book/quantization_experiments.md

Three engines run the same weights (the book's Q4_1 SmolLM2 file, dequantized; "F32" is those weights in float32):

* **lmkit, ``QuantLinear``** — one row per format: F32, Q8_0, Q6_K, Q4_K, Q4_1, Q4_0 (GGUF files written by
  :func:`lmkit.quant.gguf_writer.requantize_gguf`) and NF4 (:mod:`lmkit.quant.nf4`, no GGUF type: its size is the
  packed bytes). lmkit's model (:func:`~lmkit.loaders.smollm2.load_smollm2`, growing KV cache) with every linear
  layer a :class:`~lmkit.quant.base.QuantLinear` holding the packed blocks, which dequantizes its weight at every
  call (F32 is the plain float model). NF4 also rounds the (tied) embedding through NF4.
* **lmkit fast path** — float32, bfloat16 and int8: :func:`lmkit.quant.fast_linear.prepare_for_decoding` on the
  F32 model (fused projections, PyTorch's attention op; bfloat16 on oneDNN's prepacked weights; int8 is
  LLM.int8()'s vector-wise scheme, one row at a time on FBGEMM's prepacked int8 GEMV, a prefill on
  ``torch._int_mm``) decoding with a :class:`~lmkit.transformer.kv_cache.StaticKVCache`.
* **llama.cpp** (``llama-cpp-python``) on each GGUF file itself, multiplying straight from the packed blocks (NF4
  has none). It runs in ``bench_generate``'s worker subprocess, a fresh one per file.

Per lmkit row, in a fresh subprocess (so its memory is its own):

* ``perplexity`` — the book's standard evaluation (:mod:`lmkit.training.evaluation`: the first 2048 held-out
  tokens of ``split_text(pydoc_text())[1]``, one window) of the very model that is timed;
* ``weights_MB`` — bytes of the model's parameters and buffers (tied tensors once), MiB; ``prepacked_MB`` (fast
  paths): the memory held by the kernels' own prepacked copies of the weights (FBGEMM's for int8, oneDNN's for
  bfloat16), measured as what dropping them frees;
* ``read_MB`` — bytes of weights one decoding step reads (:func:`~lmkit.quant.fast_linear.weight_bytes_per_token`,
  plus the packed blocks of each ``QuantLinear``); for llama.cpp, every tensor of the file (the head is tied to
  the embedding, so all of it is read);
* ``rss_MB`` — resident memory after building the model minus the memory before loading it (interpreter, torch,
  lmkit and the tokenizer are not counted), both read after handing the freed heap back to the OS
  (:func:`release_freed_memory`); heap fragments the allocator cannot return stay in it. ``rss_file_MB`` is its
  file-backed part (code of libraries loaded while building). For llama.cpp both are the whole worker process
  after its first requests (file-backed: mostly the pages of the memory-mapped GGUF that were read);
* ``time`` — per thread count and number of new tokens: ``s_per_request``, the wall time of one greedy request
  (a 36-token prompt prefilled, then the new tokens one by one); ``decode_tok_s``, new tokens per second after the
  first one (prefill excluded); each the best of ``--repeats`` requests, fewer when a setting's requests have
  already taken ``--budget`` seconds (``requests`` says how many ran);
* ``tokens`` — the greedy tokens of the longest request, to compare with the F32 model's.

Writes ``lmkit/book/results/quant_formats.json`` (``rows``: the seven formats, each GGUF one with a ``llama_cpp`` part;
``fast_rows``: the fast paths) and prints the Markdown tables that ``--render`` puts in the book.
``--hf-perplexity`` adds ``perplexity_hf`` to the rows: HF transformers' perplexity on the same files.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lmkit.book import results as book_results

if TYPE_CHECKING:
    import torch

FORMATS = ["F32", "Q8_0", "Q6_K", "Q4_K", "Q4_1", "Q4_0", "NF4"]
FAST = ["float32", "bfloat16", "int8"]  # lmkit.quant.fast_linear.FORMATS (not imported: this module loads light)
FAST_STORAGE = {"float32": "float32", "bfloat16": "bfloat16", "int8": "int8 + a float scale per row"}
ROOT = Path(__file__).resolve().parents[1]
OUT = book_results.path("quant_formats")
PAGE = ROOT / "book" / "quantization_experiments.md"
PROMPT_TOKENS = 36
MIB = 2**20


def cache_dir() -> Path:
    from lmkit.assets import cache_dir as lmkit_cache

    path = lmkit_cache() / "quant_formats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def gguf_path(fmt: str) -> Path:
    """The re-quantized GGUF for ``fmt`` (written once, then reused from the lmkit cache)."""
    from lmkit.assets import smollm2_gguf
    from lmkit.quant.gguf_writer import requantize_gguf

    path = cache_dir() / f"smollm2-{fmt}.gguf"
    types_file = path.with_suffix(".types.json")
    if not path.exists() or not types_file.exists():
        types = requantize_gguf(smollm2_gguf(), path, fmt)
        types_file.write_text(json.dumps(types))
    return path


def release_freed_memory() -> None:
    """Collect garbage, then give the heap's free pages back to the OS (glibc's ``malloc_trim``), so that resident
    memory counts the live tensors rather than what a loader freed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: RSS keeps the allocator's free pages
        pass


def rss_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MiB: ``total`` and its file-backed part ``file`` (memory-mapped files)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024  # kB
    return {"total": fields["VmRSS"], "file": fields["RssFile"]}


def nf4_file_bytes() -> int:
    """Packed NF4 size of the whole model: NF4 (+ double quant) for 2-D tensors, float32 for 1-D ones."""
    import torch

    from lmkit.assets import smollm2_gguf
    from lmkit.loaders.gguf_file import open_gguf
    from lmkit.quant import ggml
    from lmkit.quant.nf4 import quantize_nf4

    reader = open_gguf(smollm2_gguf())
    total = 0
    for t in reader.tensors:
        w = torch.from_numpy(ggml.read_tensor(reader, t.name))
        total += quantize_nf4(w).nbytes() if w.dim() == 2 else w.numel() * 4
    return total


def matrix_types(path: Path) -> dict[str, int]:
    """How many 2-D tensors of the GGUF file have each ggml type (the 1-D norms stay F32 in every file)."""
    from lmkit.loaders.gguf_file import open_gguf

    return dict(Counter(t.tensor_type.name for t in open_gguf(path).tensors if len(t.shape) == 2))


def eval_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """The book's 2048 evaluation tokens ``(2048,)`` and the request's prompt, their first 36 ``(1, 36)``."""
    from lmkit.tokenizers import load_smollm2_tokenizer
    from lmkit.training.evaluation import evaluation_tokens

    ids = evaluation_tokens(load_smollm2_tokenizer().encode)
    return ids, ids[None, :PROMPT_TOKENS]


def to_nf4(model, embedding) -> None:
    """NF4 in place: every linear layer a ``QuantLinear``; the embedding (tied with the head) rounded through NF4."""
    from lmkit.quant.base import quantize_linears
    from lmkit.quant.nf4 import dequantize_nf4, quantize_nf4

    embedding.data = dequantize_nf4(quantize_nf4(embedding.data))
    quantize_linears(model, quantize_nf4, skip=("lm_head",))


def build_model(fmt: str, fast: bool):
    """lmkit's model of one row: the fast path in ``fmt``, or ``QuantLinear`` layers holding ``fmt``'s blocks."""
    from lmkit.loaders.smollm2 import load_smollm2

    if fast:
        from lmkit.quant.fast_linear import prepare_for_decoding

        return prepare_for_decoding(load_smollm2(gguf_path("F32")), fmt)
    from lmkit.quant.base import quantize_linears
    from lmkit.quant.ggml import quantize_ggml
    from lmkit.quant.gguf_writer import tensor_type_for

    model = load_smollm2(gguf_path("F32" if fmt == "NF4" else fmt))
    if fmt == "NF4":
        to_nf4(model, model.tok_emb.weight)
    elif fmt != "F32":  # the file's weights, dequantized by the loader, packed again into the same ggml blocks
        quantize_linears(model, lambda w: quantize_ggml(w, tensor_type_for(tuple(w.shape), fmt)), skip=("lm_head",))
    return model


def time_requests(request: Callable[[int], tuple[float, list[int]]], new_tokens: list[int], repeats: int,
                  budget: float) -> tuple[dict, list[int]]:
    """Time greedy requests: ``request(n)`` generates ``n`` tokens and returns (seconds after the first token,
    tokens). Returns ``({"<n>": {"s_per_request", "decode_tok_s", "requests"}}, tokens of the last setting)``."""
    request(2)  # warm-up
    out, tokens = {}, []
    for n in new_tokens:
        best, best_decode, spent, runs = float("inf"), float("inf"), 0.0, 0
        while runs < repeats and (runs == 0 or spent < budget):
            start = time.perf_counter()
            decode_s, tokens = request(n)
            seconds = time.perf_counter() - start
            if len(tokens) != n:
                raise RuntimeError(f"asked for {n} new tokens, got {len(tokens)}")
            best, best_decode, spent, runs = min(best, seconds), min(best_decode, decode_s), spent + seconds, runs + 1
        out[str(n)] = {"s_per_request": round(best, 3), "decode_tok_s": round((n - 1) / best_decode, 2),
                       "requests": runs}
    return out, tokens


def worker(fmt: str, fast: bool, new_tokens: list[int], threads: list[int], repeats: int, budget: float) -> dict:
    """Measure one lmkit row (runs in its own process)."""
    import torch
    from bench_generate import lmkit_decode

    import lmkit.loaders.smollm2  # noqa: F401  (what build_model imports is loaded before the baseline)
    import lmkit.quant.gguf_writer  # noqa: F401
    import lmkit.quant.nf4  # noqa: F401
    from lmkit.quant.base import QuantLinear
    from lmkit.quant.fast_linear import BF16Linear, Int8Linear, weight_bytes_per_token
    from lmkit.training.evaluation import perplexity

    torch.manual_seed(0)
    eval_ids, prompt = eval_tokens()
    release_freed_memory()
    base = rss_mb()
    with torch.no_grad():
        model = build_model(fmt, fast).eval()
        release_freed_memory()
        rss = rss_mb()
        tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}.values()
        packed = sum(m.weight_nbytes() for m in model.modules() if isinstance(m, QuantLinear))
        row = {"format": fmt, "engine": "lmkit fast path" if fast else "lmkit QuantLinear",
               "weights_MB": round(sum(t.numel() * t.element_size() for t in tensors) / MIB, 1),
               "read_MB": round((weight_bytes_per_token(model) + packed) / MIB, 1),
               "rss_MB": round(rss["total"] - base["total"], 1), "rss_file_MB": round(rss["file"] - base["file"], 1)}
        prepacked = [m for m in model.modules() if isinstance(m, (Int8Linear, BF16Linear)) and m.packed is not None]
        if prepacked:  # the kernels' own copies of the weights: measured as the memory that dropping them frees
            for m in prepacked:
                m.packed = None
            release_freed_memory()
            row["prepacked_MB"] = round(rss["total"] - rss_mb()["total"], 1)
            for m in prepacked:
                m.pack()
        int8 = [m for m in model.modules() if isinstance(m, Int8Linear)]
        if int8:
            row["int8_outlier_thresholds"] = sorted({m.threshold for m in int8})
        torch.set_num_threads(max(threads))
        row["perplexity"] = round(perplexity(model, eval_ids), 3)
        row["time"] = {}
        for t in threads:
            torch.set_num_threads(t)
            row["time"][f"{t}t"], row["tokens"] = time_requests(
                lambda n: lmkit_decode(model, prompt, n, static=fast), new_tokens, repeats, budget)
    return row


def llama_cpp_row(fmt: str, new_tokens: list[int], threads: list[int], repeats: int, budget: float) -> dict:
    """Time llama.cpp on ``fmt``'s GGUF file, in a fresh worker process (a build that does not suit the CPU dies
    there, not here); its memory is read after the requests of the first thread count."""
    from bench_generate import LlamaCpp, gguf_weight_bytes

    path = gguf_path(fmt)
    prompt = eval_tokens()[1][0].tolist()
    cpp = LlamaCpp()
    row: dict = {"read_MB": round(gguf_weight_bytes(path) / MIB, 1), "time": {}}
    try:
        for t in threads:
            def request(n: int, t: int = t) -> tuple[float, list[int]]:
                out = cpp.run(path=str(path), threads=t, task="decode", prompt=prompt, new=n)  # resets its cache
                return out["seconds"], out["tokens"]

            row["time"][f"{t}t"], row["tokens"] = time_requests(request, new_tokens, repeats, budget)
            if "rss_MB" not in row:
                rss = rss_mb(cpp.proc.pid)
                row["rss_MB"], row["rss_file_MB"] = round(rss["total"], 1), round(rss["file"], 1)
            time.sleep(2.0)  # llama.cpp's threads keep polling for a moment: let them go idle first
    finally:
        cpp.close()
    return row


def hf_perplexity(fmt: str) -> dict:
    """The same evaluation with HF transformers reading the same GGUF file: an implementation nobody here wrote
    (NF4: lmkit's NF4 on HF's model). Runs in its own process."""
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf_path("F32" if fmt == "NF4" else fmt)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    if fmt == "NF4":
        to_nf4(model, model.get_input_embeddings().weight)
    ids = eval_tokens()[0]
    with torch.no_grad():
        loss = model(ids[None], labels=ids[None]).loss  # one window of 2048: the same definition
    return {"perplexity": round(float(torch.exp(loss)), 3)}


def run_worker(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the book's tables, rendered from the JSON ----

def _speed_rows(results: dict) -> list[tuple[str, dict, dict]]:
    """(engine, row, its engine's F32 row) for every timed row: llama.cpp, lmkit fast path, lmkit QuantLinear."""
    rows, fast = results["rows"], results["fast_rows"]
    cpp = [{"format": r["format"], **r["llama_cpp"]} for r in rows if "llama_cpp" in r]
    return ([("llama.cpp", r, cpp[0]) for r in cpp] + [("lmkit fast path", r, fast[0]) for r in fast]
            + [("lmkit `QuantLinear`", r, rows[0]) for r in rows])


def render_tables(results: dict) -> dict[str, str]:
    """The page's Markdown tables, by name: ``quality``, then ``speed <t>t`` per thread count."""
    rows, fast = results["rows"], results["fast_rows"]
    new = [str(n) for n in results["meta"]["new_tokens"]]
    ref_ppl, ref_tokens = rows[0]["perplexity"], rows[0]["tokens"]

    def same_tokens(r: dict) -> int:  # how many leading greedy tokens equal the F32 model's
        pairs = zip(r["tokens"], ref_tokens, strict=True)
        return next((i for i, (a, b) in enumerate(pairs) if a != b), len(ref_tokens))

    lines = ["| engine | format | stored as (2-D tensors) | file MiB | weights MiB | read per token MiB | RSS MiB "
             "(file-backed) | llama.cpp RSS MiB (file-backed) | perplexity (vs F32) | HF perplexity, same file | "
             "greedy tokens as F32 |", "|" + "---|" * 11]
    for engine, r in [("lmkit `QuantLinear`", r) for r in rows] + [("lmkit fast path", r) for r in fast]:
        if "tensor_types" in r:
            stored = ", ".join(f"{k} × {v}" for k, v in r["tensor_types"].items())
        else:
            stored = "NF4 + double quant (packed, no GGUF type)" if r["format"] == "NF4" else FAST_STORAGE[r["format"]]
        ppl = f"{r['perplexity']:.3f} ({100 * (r['perplexity'] / ref_ppl - 1):+.1f}%)"
        cpp = r.get("llama_cpp")
        cpp_rss = f"{cpp['rss_MB']:.0f} ({cpp['rss_file_MB']:.0f})" if cpp else "—"
        weights = f"{r['weights_MB']}" + (f" + {r['prepacked_MB']:.0f} prepacked" if "prepacked_MB" in r else "")
        lines.append(f"| {engine} | {r['format']} | {stored} | {r.get('file_MB', '—')} | {weights} | "
                     f"{r['read_MB']} | {r['rss_MB']:.0f} ({r['rss_file_MB']:.0f}) | {cpp_rss} | {ppl} | "
                     f"{r.get('perplexity_hf', '—')} | {same_tokens(r)} of {len(ref_tokens)} |")
    tables = {"quality": "\n".join(lines)}
    for t in results["meta"]["threads"]:
        key = f"{t}t"
        lines = ["| engine | format | read per token MiB | " + " | ".join(f"s / request, {n} new (× F32)" for n in new)
                 + f" | decode tokens/s ({new[-1]} new) | weights read GB/s |", "|" + "---|" * (len(new) + 5)]
        for engine, r, peer in _speed_rows(results):
            cells = [f"{r['time'][key][n]['s_per_request']:.2f} "
                     f"({r['time'][key][n]['s_per_request'] / peer['time'][key][n]['s_per_request']:.2f}×)"
                     for n in new]
            rate = r["time"][key][new[-1]]["decode_tok_s"]
            lines.append(f"| {engine} | {r['format']} | {r['read_MB']} | " + " | ".join(cells)
                         + f" | {rate:.1f} | {rate * r['read_MB'] * MIB / 1e9:.1f} |")
        tables[f"speed {key}"] = "\n".join(lines)
    return tables


def render_page(results: dict, page: Path = PAGE) -> str:
    """``page``'s text with every ``<!-- table NAME -->`` … ``<!-- end table -->`` block filled from ``results``."""
    tables, text = render_tables(results), page.read_text()

    def fill(m: re.Match) -> str:
        if m.group(1) not in tables:
            raise KeyError(f"{page.name} asks for table {m.group(1)!r}; the results have {sorted(tables)}")
        return f"<!-- table {m.group(1)} -->\n{tables[m.group(1)]}\n<!-- end table -->"

    return re.sub(r"<!-- table (.+?) -->\n.*?<!-- end table -->", fill, text, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    parser.add_argument("--fast", nargs="*", default=FAST, choices=FAST, help="lmkit fast paths (none: skip)")
    parser.add_argument("--new", nargs="+", type=int, default=[16, 32, 128], help="new-token settings")
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="torch and llama.cpp threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many requests per setting")
    parser.add_argument("--budget", type=float, default=10.0, help="no repeat once a setting took this many s")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--hf-perplexity", action="store_true", help="add HF transformers' perplexity to --out")
    parser.add_argument("--render", action="store_true", help="fill the tables of the book's page from --out")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    timing = ["--new", *map(str, args.new), "--threads", *map(str, args.threads), "--repeats", str(args.repeats),
              "--budget", str(args.budget)]
    if args.worker:
        fmt, kind = args.worker
        row = hf_perplexity(fmt) if kind == "hf" else worker(fmt, kind == "fast", args.new, args.threads,
                                                              args.repeats, args.budget)
        print(json.dumps(row))
        return
    if args.render:
        PAGE.write_text(render_page(json.loads(args.out.read_text())))
        print(f"wrote the tables of {PAGE.relative_to(ROOT)}")
        return
    if args.hf_perplexity:  # cross-check: a second implementation's perplexity on the same files
        results = json.loads(args.out.read_text())
        for row in results["rows"]:
            if row["format"] in args.formats:
                row["perplexity_hf"] = run_worker(row["format"], "hf")["perplexity"]
                print(row["format"], row["perplexity"], row["perplexity_hf"], flush=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
        return

    import platform

    import llama_cpp
    import torch

    results = {
        "meta": {
            "model": "SmolLM2-135M-Instruct (from the Q4_1 GGUF)",
            "eval": "lmkit.training.evaluation: perplexity on the first 2048 tokens of split_text(pydoc_text())[1]",
            "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new, "threads": args.threads,
            "repeats": args.repeats, "budget_s": args.budget,
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                       f"llama-cpp-python {llama_cpp.__version__}",
        },
        "rows": [], "fast_rows": [],
    }
    rows, fast_rows = results["rows"], results["fast_rows"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the F32 peers first, then the fast paths, then the other formats; the JSON is rewritten after every row
    jobs = [(f, False) for f in args.formats[:1]] + [(f, True) for f in args.fast]
    jobs += [(f, False) for f in args.formats[1:]]
    for fmt, fast in jobs:
        started = time.perf_counter()
        row = run_worker(fmt, "fast" if fast else "quantlinear", *timing)
        if fast:
            fast_rows.append(row)
        elif fmt == "NF4":
            rows.append(row | {"file_MB": round(nf4_file_bytes() / MIB, 1)})
        else:
            path = gguf_path(fmt)
            rows.append(row | {"file_MB": round(path.stat().st_size / MIB, 1), "tensor_types": matrix_types(path),
                               "llama_cpp": llama_cpp_row(fmt, args.new, args.threads, args.repeats, args.budget)})
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        summary = {t: {n: v["s_per_request"] for n, v in per.items()} for t, per in row["time"].items()}
        print(f"{'fast ' * fast}{fmt}: perplexity {row['perplexity']}, s/request {summary} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    rows.sort(key=lambda r: FORMATS.index(r["format"]))
    fast_rows.sort(key=lambda r: FAST.index(r["format"]))
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if rows and rows[0]["format"] == "F32" and fast_rows and fast_rows[0]["format"] == "float32":
        for name, table in render_tables(results).items():
            print(f"\n{name}\n{table}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
