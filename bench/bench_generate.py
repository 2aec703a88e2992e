"""Decoding speed of SmolLM2-135M on this CPU: lmkit's float32 / bfloat16 / int8 paths vs HF transformers vs
llama.cpp, each as a fraction of the memory-bandwidth roofline.

    python bench/bench_generate.py [--threads 1 2] [--new 32] [--rounds 3] [--prefill 512]

Every engine runs the same weights (SmolLM2-135M-Instruct's Q4_1 GGUF, dequantized): lmkit's model on its fast path
(:func:`lmkit.quant.fast_linear.prepare_for_decoding`: fused projections, PyTorch's attention op, a
:class:`~lmkit.transformer.kv_cache.StaticKVCache`) in float32, bfloat16 (oneDNN's kernel on a prepacked weight)
and int8 (LLM.int8()'s vector-wise scheme — a decoding step on FBGEMM's prepacked int8 GEMV where it is exact, a
prefill on ``torch._int_mm`` — with the outlier decomposition at the paper's threshold 6.0, at 3.0, and without
it), plus
lmkit's plain float32 model (unfused, growing cache: the overhead the fast path removes);
HF's ``LlamaForCausalLM`` built from the same float32 weights (:func:`lmkit.loaders.hf.to_hf_llama`), in float32
and bfloat16; llama.cpp (``llama-cpp-python``) on the Q4_1 GGUF and on a Q8_0 GGUF written by
:func:`lmkit.quant.gguf_writer.requantize_gguf`.

Measured separately:

* **decode**: greedy, one token per step after a 29-token prompt; tokens/s over the steps after the first token
  (the prefill excluded); every engine runs ``--new`` steps;
* **prefill**: one forward of ``--prefill`` tokens of the book's evaluation text, tokens/s;
* **perplexity** of every lmkit path on the book's standard evaluation (:mod:`lmkit.training.evaluation`), and
  whether its greedy tokens are float32's.

Engines and thread counts are interleaved round by round (the machine may be shared: every number is the best of
``--rounds``, and the ratios are taken between engines measured side by side). llama.cpp runs in a worker
subprocess, so a build that does not suit the CPU cannot crash the run.

The roofline: decoding one token reads every weight once, so ``tokens/s ≤ bandwidth / bytes of weights per token``.
The bandwidth is measured here (a sum over a 512 MiB float32 tensor, far larger than the caches) at each thread
count. Writes ``lmkit/book/results/generate.json``: ``runs["<engine>/<format>/<threads>t"]`` plus the bandwidths.
``--device cuda`` runs the PyTorch engines on the GPU (llama.cpp, a CPU build here, is left out) and writes
``generate_cuda.json`` with keys ``"<engine>/<format>/cuda"``.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmkit import assets
from lmkit.book import results as book_results
from lmkit.loaders.hf import to_hf_llama
from lmkit.loaders.smollm2 import load_smollm2
from lmkit.quant.fast_linear import ONEDNN_PACKING, fbgemm_is_exact, prepare_for_decoding, weight_bytes_per_token
from lmkit.tokenizers import load_smollm2_tokenizer
from lmkit.training.evaluation import evaluation_tokens, perplexity
from lmkit.transformer.kv_cache import KVCache, StaticKVCache

RESULTS = book_results.path("generate")
PROMPT_TOKENS = 29
INT8_VARIANTS = {  # format name -> LLM.int8()'s outlier threshold in every layer
    "int8": 6.0,  # the paper's threshold
    "int8-t3": 3.0,  # the threshold that keeps SmolLM2's perplexity within 1% (tests/core/test_fast_linear.py)
    "int8-vectorwise": 0.0,  # no outlier decomposition: vector-wise int8 alone
}

LLAMA_CPP_WORKER = """
import json, sys, time, llama_cpp
models = {}
for line in sys.stdin:
    cmd = json.loads(line)
    key = (cmd["path"], cmd["threads"])
    if key not in models:
        models[key] = llama_cpp.Llama(model_path=cmd["path"], n_threads=cmd["threads"], n_threads_batch=cmd["threads"],
                                      n_ctx=1024, n_batch=512, verbose=False)
    llm = models[key]
    llm.reset()
    if cmd["task"] == "prefill":
        t0 = time.perf_counter()
        llm.eval(cmd["prompt"])
        out = {"seconds": time.perf_counter() - t0}
    else:
        tokens, stamps = [], []
        for tok in llm.generate(cmd["prompt"], temp=0.0, top_k=1, reset=True):
            tokens.append(tok)
            stamps.append(time.perf_counter())
            if len(tokens) == cmd["new"]:
                break
        out = {"seconds": stamps[-1] - stamps[0], "tokens": tokens}
    print(json.dumps(out), flush=True)
"""


class LlamaCpp:
    """llama.cpp in a long-lived subprocess: the models stay loaded between rounds."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LLAMA_CPP_WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"llama.cpp worker died: {self.proc.stderr.read()[-300:]}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@torch.inference_mode()
def lmkit_decode(model, prompt: torch.Tensor, new: int, static: bool) -> tuple[float, list[int]]:
    """Greedy decoding with lmkit's KV cache: (seconds for the steps after the first token, tokens)."""
    cache = StaticKVCache(prompt.shape[1] + new) if static else KVCache()
    logits, out = model(prompt, cache=cache).logits, []
    for _ in range(new):
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        out.append(int(nxt))
        if len(out) == 1:
            t0 = time.perf_counter()
        if len(out) < new:
            logits = model(nxt, cache=cache).logits
    return time.perf_counter() - t0, out


@torch.inference_mode()
def hf_decode(model, prompt: torch.Tensor, new: int) -> tuple[float, list[int]]:
    """The same loop on HF's model and its own cache (``past_key_values``)."""
    res, out = model(prompt, use_cache=True), []
    for _ in range(new):
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        out.append(int(nxt))
        if len(out) == 1:
            t0 = time.perf_counter()
        if len(out) < new:
            res = model(nxt, past_key_values=res.past_key_values, use_cache=True)
    return time.perf_counter() - t0, out


@torch.inference_mode()
def torch_prefill(model, ids: torch.Tensor, hf: bool) -> float:
    synchronize(ids.device)
    t0 = time.perf_counter()
    model(ids, use_cache=True) if hf else model(ids, cache=StaticKVCache(ids.shape[1]))
    synchronize(ids.device)
    return time.perf_counter() - t0


def memory_bandwidth(threads: int, device: torch.device, mib: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of ``repeats`` sums over a ``mib`` MiB float32 tensor on ``device``."""
    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, device=device)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        x.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU op has finished when it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gguf_weight_bytes(path: Path) -> int:
    """Bytes of all tensors of a GGUF: with the output tied to the embedding, one token reads every one of them."""
    from lmkit.loaders.gguf_file import open_gguf

    return sum(int(t.n_bytes) for t in open_gguf(path).tensors)


def torch_engines(device: torch.device) -> dict[str, tuple[torch.nn.Module, str]]:
    """``name -> (model, kind)`` for every PyTorch engine, all built from the same SmolLM2 weights on ``device``."""
    base = load_smollm2(assets.smollm2_gguf(), device=device)
    engines = {
        "lmkit/float32-plain": (base, "lmkit-plain"),
        **{f"lmkit/{fmt}": (prepare_for_decoding(copy.deepcopy(base), fmt), "lmkit")
           for fmt in ("float32", "bfloat16")},
        **{f"lmkit/{name}": (prepare_for_decoding(copy.deepcopy(base), "int8", threshold=t), "lmkit")
           for name, t in INT8_VARIANTS.items()},
        "hf/float32": (to_hf_llama(base).to(device).eval(), "hf"),
    }
    engines["hf/bfloat16"] = (copy.deepcopy(engines["hf/float32"][0]).to(torch.bfloat16), "hf")
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then llama.cpp, a CPU build, is left out)")
    parser.add_argument("--q8", type=Path, default=None, help="a Q8_0 GGUF (default: written to a temp dir)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    if not on_cpu:
        args.threads = [1]  # the host threads that launch the kernels; the GPU does the work
    where = {t: f"{t}t" if on_cpu else device.type for t in args.threads}  # the key's last part

    path = assets.smollm2_gguf()
    tok = load_smollm2_tokenizer(path)
    long_prompt = evaluation_tokens(tok.encode, args.prefill)[None].to(device)  # (1, prefill)
    prompt = long_prompt[:, :PROMPT_TOKENS]
    engines = torch_engines(device)
    bytes_per_token = {name: weight_bytes_per_token(m) for name, (m, kind) in engines.items() if kind != "hf"}
    for fmt in ("float32", "bfloat16"):  # HF reads the same tensors as lmkit in the same dtype
        bytes_per_token[f"hf/{fmt}"] = bytes_per_token[f"lmkit/{fmt}"]

    tmp = tempfile.TemporaryDirectory()
    gguf_files = {}
    if on_cpu:
        q8 = args.q8
        if q8 is None:
            from lmkit.quant.gguf_writer import requantize_gguf

            q8 = Path(tmp.name) / "SmolLM2-135M-Instruct.Q8_0.gguf"
            requantize_gguf(path, q8, "Q8_0")
        gguf_files = {"llama.cpp/Q4_1": path, "llama.cpp/Q8_0": q8}
        bytes_per_token.update({name: gguf_weight_bytes(p) for name, p in gguf_files.items()})
        cpp = LlamaCpp()

    runs: dict[str, dict] = {}
    bandwidth = {t: memory_bandwidth(t, device) for t in args.threads}

    def record(name: str, threads: int, decode_s: float | None = None, prefill_s: float | None = None,
               tokens: list[int] | None = None) -> None:
        engine, fmt = name.split("/")
        r = runs.setdefault(f"{name}/{where[threads]}", {
            "engine": engine, "format": fmt, "threads": threads, "where": where[threads], "decode_tok_s": 0.0,
            "prefill_tok_s": 0.0, "bytes_per_token": bytes_per_token[name]})
        if decode_s is not None:
            r["decode_tok_s"] = max(r["decode_tok_s"], (args.new - 1) / decode_s)
            r["tokens"] = tokens
        if prefill_s is not None:
            r["prefill_tok_s"] = max(r["prefill_tok_s"], args.prefill / prefill_s)

    for _, (m, kind) in engines.items():  # warm-up
        hf_decode(m, prompt, 2) if kind == "hf" else lmkit_decode(m, prompt, 2, kind == "lmkit")
    for rnd in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            bandwidth[threads] = max(bandwidth[threads], memory_bandwidth(threads, device, repeats=2))
            for name, (m, kind) in engines.items():
                if kind == "hf":
                    s, toks = hf_decode(m, prompt, args.new)
                else:
                    s, toks = lmkit_decode(m, prompt, args.new, kind == "lmkit")
                record(name, threads, decode_s=s, tokens=toks,
                       prefill_s=torch_prefill(m, long_prompt, kind == "hf"))
            for name, p in gguf_files.items():
                dec = cpp.run(path=str(p), threads=threads, task="decode", prompt=prompt[0].tolist(), new=args.new)
                pre = cpp.run(path=str(p), threads=threads, task="prefill", prompt=long_prompt[0].tolist())
                record(name, threads, decode_s=dec["seconds"], tokens=dec["tokens"], prefill_s=pre["seconds"])
            if gguf_files:
                time.sleep(2.0)  # llama.cpp's worker threads keep polling for a moment: let them go idle first
            print(f"round {rnd + 1}/{args.rounds}, {where[threads]} done", flush=True)
    if gguf_files:
        cpp.close()

    torch.set_num_threads(1)
    eval_ids = evaluation_tokens(tok.encode)
    ppl = {name: perplexity(m, eval_ids) for name, (m, kind) in engines.items() if kind != "hf"}
    for r in runs.values():
        r["same_tokens_as_lmkit_float32"] = r["tokens"] == runs[f"lmkit/float32/{r['where']}"]["tokens"]
        name = f"{r['engine']}/{r['format']}"
        if name in ppl:
            r["perplexity"] = ppl[name]
            r["perplexity_vs_float32"] = ppl[name] / ppl["lmkit/float32"]
        r["roofline_tok_s"] = bandwidth[r["threads"]] / r["bytes_per_token"]
        r["roofline_fraction"] = r["decode_tok_s"] / r["roofline_tok_s"]
    targets = {}
    for t in args.threads:
        d = {name: runs[f"{name}/{where[t]}"]["decode_tok_s"] for name in (*engines, *gguf_files)}
        targets[where[t]] = {"lmkit float32 / HF float32 (target >= 1.0)": d["lmkit/float32"] / d["hf/float32"]}
        if gguf_files:
            targets[where[t]].update({
                **{f"lmkit {name} / llama.cpp Q4_1 (target >= 1.0)": d[f"lmkit/{name}"] / d["llama.cpp/Q4_1"]
                   for name in INT8_VARIANTS},
                "lmkit bf16 / llama.cpp Q4_1 (target >= 0.5)": d["lmkit/bfloat16"] / d["llama.cpp/Q4_1"],
            })
    results = {
        "device": device.type, "torch": torch.__version__, "prompt_tokens": PROMPT_TOKENS, "new_tokens": args.new,
        "prefill_tokens": args.prefill, "rounds": args.rounds,
        "int8_one_row_kernel": "FBGEMM" if on_cpu and fbgemm_is_exact() else "torch._int_mm",
        "bf16_prepacked": on_cpu and ONEDNN_PACKING,
        "bandwidth_bytes_per_s": {where[t]: b for t, b in bandwidth.items()},
        "runs": runs, "targets": targets,
    }
    print(f"{'engine/format/where':30s} {'decode tok/s':>12s} {'prefill tok/s':>13s} {'MB/token':>9s} "
          f"{'roofline':>8s} {'ppl':>6s}  same tokens")
    for key, r in runs.items():
        print(f"{key:30s} {r['decode_tok_s']:12.1f} {r['prefill_tok_s']:13.1f} {r['bytes_per_token'] / 1e6:9.1f} "
              f"{r['roofline_fraction']:8.0%} {r.get('perplexity', float('nan')):6.3f}  "
              f"{r['same_tokens_as_lmkit_float32']}")
    for t, b in bandwidth.items():
        print(f"memory bandwidth, {where[t]}: {b / 1e9:.1f} GB/s")
    for t, ratios in targets.items():
        for what, value in ratios.items():
            print(f"{t}: {what}: {value:.2f}")
    out = RESULTS if on_cpu else RESULTS.with_name(f"generate_{device.type}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
