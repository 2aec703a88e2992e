"""Decoding strategies on SmolLM2-135M: lmkit's ``generate`` / ``beam_search`` vs HF ``generate``, same weights.

    python bench/bench_decoding.py [--threads 2] [--new 24] [--repeats 2]

lmkit runs its own model (dequantized from the GGUF, lmkit's KV cache); HF runs ``LlamaForCausalLM`` built from the
same float32 weights by :func:`lmkit.loaders.hf.to_hf_llama`. Three settings: greedy with a repetition penalty and a
no-repeat 3-gram, sampling (T=0.8, top-k 50, top-p 0.9, same seed), and beam search with 4 beams. EOS cannot stop a
run early (``min_new_tokens`` = ``--new``), so both generate exactly ``--new`` tokens. Reported: seconds (best of
``--repeats``), tokens/s, the lmkit/HF speed ratio, and whether the two produced the same tokens.
Writes ``lmkit/book/results/decoding.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lmkit.book import results as book_results
from lmkit.decoding import beam_search, generate
from lmkit.loaders.hf import to_hf_llama
from lmkit.loaders.smollm2 import chat_prompt, load_smollm2
from lmkit.tokenizers import load_smollm2_tokenizer

RESULTS = book_results.path("decoding")
SETTINGS = {
    "greedy + penalties": {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3},
    "sampling T=0.8 k=50 p=0.9": {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.9},
    "beam search, 4 beams": {"num_beams": 4},
}


def best_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_smollm2()
    hf_model = to_hf_llama(model)
    tok = load_smollm2_tokenizer()
    ids = torch.tensor([tok.encode(chat_prompt("Write a short poem about the sea."))])
    common = {"eos_token_id": tok.eos_id, "min_new_tokens": args.new}

    rows = []
    for name, settings in SETTINGS.items():
        seed = 0

        def ours(settings=settings, seed=seed):
            if settings.get("num_beams", 1) > 1:
                return beam_search(model, ids, args.new, **common, **settings).sequences
            return generate(model, ids, args.new, generator=torch.Generator().manual_seed(seed), **common, **settings)

        def theirs(settings=settings, seed=seed):
            torch.manual_seed(seed)
            return hf_model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new, pad_token_id=tok.eos_id,
                do_sample=settings.get("do_sample", False), top_k=settings.get("top_k"), **common,
                **{k: v for k, v in settings.items() if k not in ("do_sample", "top_k")},
            )  # fmt: skip

        t_ours, out_ours = best_time(ours, args.repeats)
        t_hf, out_hf = best_time(theirs, args.repeats)
        row = {
            "setting": name,
            "lmkit_s": round(t_ours, 3),
            "hf_s": round(t_hf, 3),
            "lmkit_tokens_per_s": round(args.new / t_ours, 1),
            "hf_tokens_per_s": round(args.new / t_hf, 1),
            "speed_ratio_lmkit_over_hf": round(t_hf / t_ours, 2),
            "same_tokens": bool(torch.equal(out_ours, out_hf)),
        }
        rows.append(row)
        print(row)

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": args.threads, "new_tokens": args.new, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
