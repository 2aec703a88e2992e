"""Full-model table: round-to-nearest vs GPTQ vs AWQ on SmolLM2-135M, perplexity and quantization time.

    python bench/bench_gptq_awq.py                      # 4-bit g128, 3-bit g128, then 4-bit g64, 3-bit g64
    python bench/bench_gptq_awq.py --settings 4:128 3:128 --methods rtn gptq gptq-act

Methods: ``rtn``, ``gptq`` (natural column order), ``gptq-act`` (GPTQ with act-order), ``awq``.

Baseline: the dequantized Q4_1 weights of the GGUF file. Evaluation: perplexity on the first 2048 tokens of the
held-out split of ``pydoc_data.topics`` (``lmkit.data.split_text(...)[1]``). Calibration: 16 random windows of 512
tokens from the disjoint training split. Every run starts from the same base weights; the JSON
(``lmkit/book/results/gptq_awq.json``) is rewritten after each run, so an interrupted bench keeps what it measured.
The ratio printed for each run is its perplexity over RTN's at the same setting (measured in the same run).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from lmkit.book import results as book_results
from lmkit.data import pydoc_text, split_text
from lmkit.loaders.smollm2 import load_smollm2
from lmkit.quant.driver import QuantConfig, calibration_batch, quantize_timed
from lmkit.tokenizers import load_smollm2_tokenizer
from lmkit.training.evaluation import evaluation_tokens, perplexity

OUT = book_results.path("gptq_awq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["4:128", "3:128", "4:64", "3:64"], help="bits:group")
    parser.add_argument("--methods", nargs="+", default=["rtn", "gptq", "awq"])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)  # the per-column GPTQ loop hates contention
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_smollm2_tokenizer()
    train = split_text(pydoc_text())[0]
    eval_ids = evaluation_tokens(tokenizer.encode)  # the first 2048 tokens of the held-out split
    calibration = calibration_batch(torch.tensor(tokenizer.encode(train)), args.samples, args.seq_len, seed=0)

    model = load_smollm2()
    model.eval()
    base_state = copy.deepcopy(model.blocks.state_dict())
    t0 = time.perf_counter()
    with torch.no_grad():
        baseline = perplexity(model, eval_ids)
    print(f"baseline (dequantized Q4_1): ppl {baseline:.3f} ({time.perf_counter() - t0:.1f} s to evaluate)")
    result = {
        "model": "SmolLM2-135M-Instruct (dequantized Q4_1 weights)",
        "eval": "first 2048 tokens of split_text(pydoc_text())[1]",
        "calibration": f"{args.samples} x {args.seq_len} tokens of split_text(pydoc_text())[0], seed 0",
        "machine": f"{platform.machine()}, {args.threads} thread(s) of a shared 2-core CPU",
        "baseline_ppl": round(baseline, 4),
        "runs": [],
    }
    for setting in args.settings:
        bits, group = (int(v) for v in setting.split(":"))
        rtn_ppl = None
        for method in args.methods:
            model.blocks.load_state_dict(base_state)
            config = QuantConfig(method=method.removesuffix("-act"), bits=bits, group_size=group,
                                 act_order=method.endswith("-act"))
            _, seconds = quantize_timed(model, calibration, config, progress=False)
            with torch.no_grad():
                ppl = perplexity(model, eval_ids)
            rtn_ppl = ppl if method == "rtn" else rtn_ppl
            ratio = f", {ppl / rtn_ppl:.3f} x RTN" if rtn_ppl else ""
            print(f"{method:>4} {bits}-bit g{group}: ppl {ppl:8.3f}{ratio}  ({seconds:.1f} s)", flush=True)
            run = {"method": method, "bits": bits, "group_size": group, "ppl": round(ppl, 4)}
            result["runs"].append({**run, "seconds": round(seconds, 1)})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
