"""Greedy generation speed of SmolLM2-135M on this CPU: lmkit (KV cache) vs HF transformers vs llama.cpp.

    python bench/bench_generate.py [--threads 2] [--new 64] [--repeats 3]

All three run the same weights: lmkit's model dequantized from the GGUF, HF's ``LlamaForCausalLM`` built from those
float32 weights by :func:`lmkit.loaders.hf.to_hf_llama` (``generate`` with ``do_sample=False``), and llama.cpp
(``llama-cpp-python``) on the Q4_1 GGUF itself — the quantized format it was made for, so expect it to be faster.
The prompt is the first 29 tokens of the book's evaluation text; every engine generates exactly ``--new`` tokens
(end-of-text is not allowed to stop it early). Tokens/s counts new tokens over the whole call (prefill included);
best of ``--repeats``. llama.cpp runs in a subprocess so a build that does not suit the CPU cannot crash the run.
Writes ``bench/results/generate.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from lmkit import assets
from lmkit.evaluation import evaluation_tokens
from lmkit.kv_cache import KVCache
from lmkit.loaders.hf import to_hf_llama
from lmkit.loaders.smollm2 import load_smollm2
from lmkit.tokenizers import load_smollm2_tokenizer

RESULTS = Path(__file__).parent / "results" / "generate.json"

LLAMA_CPP = """
import json, sys, time, llama_cpp
path, threads, new, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prompt = [int(i) for i in sys.argv[5].split(",")]
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=256, verbose=False)
best, tokens = float("inf"), []
for _ in range(repeats):
    llm.reset()
    t0, tokens = time.perf_counter(), []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        tokens.append(tok)
        if len(tokens) == new:
            break
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best, "tokens": tokens}))
"""


@torch.inference_mode()
def lmkit_greedy(model, prompt: torch.Tensor, new: int) -> list[int]:
    """The plain greedy loop with lmkit's KV cache: prefill once, then one token per step."""
    cache, out = KVCache(), []
    logits = model(prompt, cache=cache).logits
    for _ in range(new):
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        out.append(int(nxt))
        if len(out) < new:
            logits = model(nxt, cache=cache).logits
    return out


@torch.inference_mode()
def hf_greedy(model, prompt: torch.Tensor, new: int) -> list[int]:
    ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, pad_token_id=2)
    return ids[0, prompt.shape[1]:].tolist()


def best_time(fn, repeats: int) -> tuple[float, list[int]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=29)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = assets.smollm2_gguf()
    model = load_smollm2(path)
    hf = to_hf_llama(model)
    prompt = evaluation_tokens(load_smollm2_tokenizer(path).encode, args.prompt)[None]  # (1, P)
    lmkit_greedy(model, prompt, 4), hf_greedy(hf, prompt, 4)  # warm-up

    results = {"threads": args.threads, "prompt_tokens": args.prompt, "new_tokens": args.new,
               "device": "cpu", "torch": torch.__version__}
    t, ours = best_time(lambda: lmkit_greedy(model, prompt, args.new), args.repeats)
    results["lmkit_tok_s"] = args.new / t
    t, theirs = best_time(lambda: hf_greedy(hf, prompt, args.new), args.repeats)
    results["hf_tok_s"] = args.new / t
    results["hf_same_tokens"] = ours == theirs

    done = subprocess.run([sys.executable, "-c", LLAMA_CPP, str(path), str(args.threads), str(args.new),
                           str(args.repeats), ",".join(map(str, prompt[0].tolist()))], capture_output=True, text=True)
    if done.returncode == 0:
        cpp = json.loads(done.stdout.strip().splitlines()[-1])
        results["llama_cpp_tok_s"] = args.new / cpp["seconds"]
        results["llama_cpp_same_tokens"] = cpp["tokens"] == ours
    else:
        results["llama_cpp_error"] = f"return code {done.returncode}: {done.stderr.strip()[-300:]}"

    print(f"lmkit (float32, KV cache): {results['lmkit_tok_s']:6.1f} tokens/s")
    print(f"HF transformers (float32): {results['hf_tok_s']:6.1f} tokens/s   lmkit/HF = "
          f"{results['lmkit_tok_s'] / results['hf_tok_s']:.2f}   same tokens: {results['hf_same_tokens']}")
    if "llama_cpp_tok_s" in results:
        print(f"llama.cpp (Q4_1 GGUF):     {results['llama_cpp_tok_s']:6.1f} tokens/s   lmkit/llama.cpp = "
              f"{results['lmkit_tok_s'] / results['llama_cpp_tok_s']:.2f}")
    else:
        print(f"llama.cpp: not measured ({results['llama_cpp_error']})")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
