"""SmolLM2 in seven weight formats: file size, memory, perplexity and time per request.

    python bench/bench_quant_formats.py                 # all formats, new tokens 16 32 128
    python bench/bench_quant_formats.py --new 16 32     # fewer settings when time is short
    python bench/bench_quant_formats.py --engine lmkit --ppl-only --formats F32 Q4_0   # add a cross-check column
    python bench/bench_quant_formats.py --engine llama_cpp --threads 2   # add llama.cpp time-per-request columns

The model runs in lmkit (``load_smollm2``, ``lmkit.training.evaluation.perplexity``,
``lmkit.decoding.generate``) or, with ``--engine hf``, in HF transformers reading the same GGUF files
(``from_pretrained(..., gguf_file=...)``): the same weights through an implementation nobody here wrote.
``--ppl-only`` adds ``perplexity_<engine>`` to an existing JSON, so the two implementations can be compared on the
same files. ``--engine llama_cpp`` adds
``s_per_request_llama_cpp_N`` columns to an existing JSON: llama.cpp (``llama-cpp-python``) timing greedy generation
on each GGUF file itself, multiplying straight from the packed blocks (NF4 has no GGUF type, so it gets none).

Formats: F32, Q8_0, Q6_K, Q4_K, Q4_1, Q4_0 (GGUF files written by ``lmkit.quant.gguf_writer`` from the book's
Q4_1 SmolLM2 file) and NF4 (``lmkit.quant.nf4``, no GGUF type: its size is the packed bytes). All start from the
same weights: the dequantized Q4_1 file, so "F32" is those weights in float32 and Q4_1 reproduces the file.

Per format, in a fresh subprocess (so memory is measured cleanly):

* ``perplexity`` — on the book's 2048 evaluation tokens (one window), with the model the engine builds from
  that GGUF (float compute on the format's dequantized weights); NF4 quantizes every linear layer and the
  (tied) embedding of the F32 model.
* ``weights_MB`` — bytes of the model's parameters and buffers when every linear layer is a ``QuantLinear``
  holding the packed blocks (the embedding / tied head stays float32).
* ``rss_MB`` — measured resident memory of that process after building the packed model, minus the memory
  before loading any model (interpreter + torch + imports); it also holds whatever the loader did not give
  back to the OS, so it is an upper bound.
* ``s_per_request_N`` — wall time of greedy generation with a KV cache: a 36-token prompt and
  ``N`` new tokens, with the packed ``QuantLinear`` model (which dequantizes each weight when it is used; F32
  is the plain float model, the peer every ratio is taken against).
* ``s_per_request_llama_cpp_N`` (``--engine llama_cpp``) — the same request in llama.cpp on the GGUF file:
  the cache is reset before every request so the prompt is prefilled each time; best of ``--repeats``.

Results go to ``bench/results/quant_formats.json`` and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FORMATS = ["F32", "Q8_0", "Q6_K", "Q4_K", "Q4_1", "Q4_0", "NF4"]
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "quant_formats.json"
PROMPT_TOKENS = 36


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


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def nf4_file_bytes() -> int:
    """Packed NF4 size of the whole model: NF4 (+ double quant) for 2-D tensors, float32 for 1-D ones."""
    import torch
    from gguf import GGUFReader

    from lmkit.assets import smollm2_gguf
    from lmkit.quant import ggml
    from lmkit.quant.nf4 import quantize_nf4

    reader = GGUFReader(smollm2_gguf())
    total = 0
    for t in reader.tensors:
        w = torch.from_numpy(ggml.read_tensor(reader, t.name))
        total += quantize_nf4(w).nbytes() if w.dim() == 2 else w.numel() * 4
    return total


def engine_available() -> str:
    """``lmkit`` when lmkit's SmolLM2 loader is installed, else ``hf`` (transformers reading the same GGUF)."""
    try:
        import lmkit.loaders.smollm2  # noqa: F401
        import lmkit.training.evaluation  # noqa: F401
    except ImportError:
        return "hf"
    return "lmkit"


def load_model(path: Path, engine: str):
    """(model, embedding weight) for a GGUF file, in float32."""
    import torch

    if engine == "lmkit":
        from lmkit.loaders.smollm2 import load_smollm2

        model = load_smollm2(path)
        return model, model.tok_emb.weight
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, model.get_input_embeddings().weight


def model_perplexity(model, ids, engine: str) -> float:
    import torch

    if engine == "lmkit":
        from lmkit.training.evaluation import perplexity

        return float(perplexity(model, ids))
    return float(torch.exp(model(ids[None], labels=ids[None]).loss))  # one window of 2048, same definition


def greedy(model, prompt, n: int, engine: str):
    if engine == "lmkit":
        from lmkit.decoding import generate

        return generate(model, prompt, max_new_tokens=n)
    return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)


def eval_text_and_prompt() -> tuple[str, list[int]]:
    """The evaluation text and the first ``PROMPT_TOKENS`` token ids of it (the request every engine times)."""
    from lmkit import data
    from lmkit.tokenizers import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    text = data.split_text(data.pydoc_text())[1]
    return text, tok.encode(text[:2000])[:PROMPT_TOKENS]


def llama_cpp_worker(fmt: str, new_tokens: list[int], threads: int, repeats: int) -> dict:
    """Time greedy requests in llama.cpp on the GGUF file of ``fmt`` (runs in its own process: a build that does
    not suit the CPU dies there, not in the driver)."""
    import llama_cpp

    _, prompt = eval_text_and_prompt()
    llm = llama_cpp.Llama(model_path=str(gguf_path(fmt)), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                          verbose=False)

    def request(n: int) -> list[int]:
        llm.reset()  # forget the previous request, so the prompt is evaluated again (no prefix reuse)
        out: list[int] = []
        for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):  # generate never stops on end-of-text
            out.append(tok)
            if len(out) == n:
                return out
        return out

    request(2)  # warm-up
    row: dict = {"format": fmt}
    for n in new_tokens:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            assert len(request(n)) == n
            best = min(best, time.perf_counter() - start)
        row[f"s_per_request_llama_cpp_{n}"] = round(best, 3)
    return row


def add_llama_cpp_columns(formats: list[str], new_tokens: list[int], threads: int, repeats: int) -> None:
    """Add llama.cpp time per request (and its ratio to llama.cpp's F32) to the rows of the existing JSON."""
    results = json.loads(OUT.read_text())
    rows = {r["format"]: r for r in results["rows"]}
    for fmt in formats:
        if fmt == "NF4" or fmt not in rows:
            continue
        cmd = [sys.executable, __file__, "--worker", fmt, "--engine", "llama_cpp", "--threads", str(threads),
               "--repeats", str(repeats), "--new", *map(str, new_tokens)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"llama.cpp worker for {fmt} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rows[fmt] |= json.loads(done.stdout.strip().splitlines()[-1])
        print(fmt, {k: v for k, v in rows[fmt].items() if "llama_cpp" in k}, flush=True)
    peer = rows.get("F32", {})
    for r in rows.values():
        for n in new_tokens:
            key = f"s_per_request_llama_cpp_{n}"
            if key in r and key in peer:
                r[f"time_ratio_llama_cpp_vs_F32_{n}"] = round(r[key] / peer[key], 2)
    import platform

    import llama_cpp

    results["meta"]["timing_llama_cpp"] = (
        f"llama-cpp-python {llama_cpp.__version__} greedy (temp 0, top_k 1) on each GGUF file, n_threads={threads}, "
        f"{PROMPT_TOKENS}-token prompt prefilled at every request, best of {repeats}; no NF4 (no GGUF type); "
        f"{platform.processor() or platform.machine()}, shared CPU")
    results["meta"]["new_tokens_llama_cpp"] = new_tokens
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print("| format | " + " | ".join(f"llama.cpp s / request ({n} new)" for n in new_tokens) + " |")
    print("|" + "---|" * (len(new_tokens) + 1))
    for r in results["rows"]:
        if f"s_per_request_llama_cpp_{new_tokens[0]}" in r:
            cells = [f"{r[f's_per_request_llama_cpp_{n}']} ({r[f'time_ratio_llama_cpp_vs_F32_{n}']}x)"
                     for n in new_tokens]
            print(f"| {r['format']} | " + " | ".join(cells) + " |")
    print(f"wrote {OUT.relative_to(ROOT)}")


def worker(fmt: str, new_tokens: list[int], engine: str, ppl_only: bool = False) -> dict:
    """Measure one format (runs in its own process)."""
    import torch

    from lmkit.quant.base import quantize_linears
    from lmkit.quant.ggml import quantize_ggml
    from lmkit.quant.gguf_writer import tensor_type_for
    from lmkit.quant.nf4 import dequantize_nf4, quantize_nf4
    from lmkit.tokenizers import load_smollm2_tokenizer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    text, prompt_ids = eval_text_and_prompt()
    eval_ids = torch.tensor(load_smollm2_tokenizer().encode(text)[:2048])
    prompt = torch.tensor([prompt_ids])
    gc.collect()
    base_rss = rss_mb()

    with torch.no_grad():
        model, emb = load_model(gguf_path("F32" if fmt == "NF4" else fmt), engine)
        if fmt == "NF4":
            emb.data = dequantize_nf4(quantize_nf4(emb.data))  # the embedding (tied with the head) in NF4 too
            quantize_linears(model, quantize_nf4, skip=("lm_head",))
        model.eval()
        ppl = model_perplexity(model, eval_ids, engine)
        if ppl_only:
            return {"format": fmt, "perplexity": round(ppl, 3)}
        if fmt not in ("F32", "NF4"):  # run the linears from their packed ggml blocks
            quantize_linears(model, lambda w: quantize_ggml(w, tensor_type_for(tuple(w.shape), fmt)), skip=("lm_head",))
        gc.collect()
        weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        rss = rss_mb() - base_rss
        row = {"format": fmt, "perplexity": round(ppl, 3), "weights_MB": round(weights / 2**20, 1),
               "rss_MB": round(rss, 1)}
        greedy(model, prompt, 2, engine)  # warm-up
        for n in new_tokens:
            start = time.perf_counter()
            out = greedy(model, prompt, n, engine)
            row[f"s_per_request_{n}"] = round(time.perf_counter() - start, 3)
            assert out.shape[1] == PROMPT_TOKENS + n
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    parser.add_argument("--new", nargs="+", type=int, default=[16, 32, 128], help="new-token settings")
    parser.add_argument("--engine", choices=["lmkit", "hf", "llama_cpp"], default=None,
                        help="default: lmkit if its loader exists; llama_cpp only adds its timing columns to the JSON")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (--engine llama_cpp)")
    parser.add_argument("--repeats", type=int, default=3, help="llama.cpp: best of this many requests")
    parser.add_argument("--ppl-only", action="store_true", help="only add this engine's perplexity to the JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    engine = args.engine or engine_available()
    if engine == "llama_cpp" and args.ppl_only:
        parser.error("--engine llama_cpp only times requests; it has no --ppl-only mode")
    if args.worker:
        if engine == "llama_cpp":
            print(json.dumps(llama_cpp_worker(args.worker, args.new, args.threads, args.repeats)))
        else:
            print(json.dumps(worker(args.worker, args.new, engine, args.ppl_only)))
        return
    if engine == "llama_cpp":
        add_llama_cpp_columns(args.formats, args.new, args.threads, args.repeats)
        return
    if args.ppl_only:  # cross-check: a second implementation's perplexity on the same files
        results = json.loads(OUT.read_text())
        for row in results["rows"]:
            if row["format"] in args.formats:
                cmd = [sys.executable, __file__, "--worker", row["format"], "--engine", engine, "--ppl-only"]
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
                row[f"perplexity_{engine}"] = json.loads(done.stdout.strip().splitlines()[-1])["perplexity"]
                print(row["format"], row["perplexity"], row[f"perplexity_{engine}"], flush=True)
                OUT.write_text(json.dumps(results, indent=1) + "\n")
        return

    rows = []
    for fmt in args.formats:
        started = time.perf_counter()
        if fmt == "NF4":
            size, types = nf4_file_bytes(), {"NF4": "all 2-D tensors (packed bytes, no GGUF type)"}
        else:
            path = gguf_path(fmt)
            size = path.stat().st_size
            counts: dict[str, int] = {}
            for t in json.loads(path.with_suffix(".types.json").read_text()).values():
                counts[t] = counts.get(t, 0) + 1
            types = counts
        cmd = [sys.executable, __file__, "--worker", fmt, "--engine", engine, "--new", *map(str, args.new)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"worker for {fmt} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row |= {"file_MB": round(size / 2**20, 1), "tensor_types": types}
        rows.append(row)
        print(f"{fmt}: {row} ({time.perf_counter() - started:.0f} s)", flush=True)

    peer = next((r for r in rows if r["format"] == "F32"), rows[0])
    for r in rows:
        r["size_ratio_vs_F32"] = round(r["file_MB"] / peer["file_MB"], 3)
        for n in args.new:
            r[f"time_ratio_vs_F32_{n}"] = round(r[f"s_per_request_{n}"] / peer[f"s_per_request_{n}"], 2)

    header = ["format", "file MB", "weights MB", "RSS MB", "perplexity"] + [f"s / request ({n} new)" for n in args.new]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r["format"], r["file_MB"], r["weights_MB"], r["rss_MB"], r["perplexity"]]
        cells += [f"{r[f's_per_request_{n}']} ({r[f'time_ratio_vs_F32_{n}']}x)" for n in args.new]
        print("| " + " | ".join(str(c) for c in cells) + " |")

    import platform

    import torch

    meta = {
        "model": "SmolLM2-135M-Instruct (from the Q4_1 GGUF)",
        "eval": "perplexity on the first 2048 tokens of split_text(pydoc_text())[1]",
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": args.new,
        "engine": engine,
        "timing": f"{engine} greedy generation with KV cache; quantized formats run QuantLinear from packed blocks",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, shared CPU",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
