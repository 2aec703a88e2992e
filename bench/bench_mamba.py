"""Benchmark: Mamba against attention — cost vs sequence length, and learning a selective-copying task.

    python bench/bench_mamba.py            # L = 256 .. 4096 and 1500 training steps per model (~15 min on 1 core)
    python bench/bench_mamba.py --quick    # L = 256 .. 1024 and 200 steps

1. **Cost of one mixing layer** (:func:`lmkit.ssm.compare.mixer_costs`, d_model 64, 4 heads, N = 16, batch 1,
   forward, no gradient): best-of-3 time and peak tensor bytes of lmkit's Mamba mixer (chunked scan) and of lmkit's
   causal multi-head attention (eager, the ``(H, L, L)`` scores materialised). Reported with their ratios, measured
   in the same run.
2. **Selective copying** (:mod:`lmkit.book.experiments.selective_copying`:
   32 tokens of context holding 4 data tokens from 8 symbols, then 4
   go tokens): a 2-layer Mamba, the same Mamba with the selection switched off (``selective=False``: Δ, B, C
   learned but the same for every token — the S4-like ablation of the paper's Table 1), and a 2-layer lmkit
   Transformer (RoPE, SwiGLU) of about the same size, each trained for the same number of steps (batch 16, AdamW
   lr 3e-3, one thread). Held-out token accuracy on 512 fixed examples every 50 steps, with the wall clock.

Results go to ``lmkit/book/results/mamba.json``; the chapter ``notebooks/19_mamba.ipynb`` plots them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from functools import partial
from pathlib import Path

import torch

from lmkit.book import results as book_results
from lmkit.book.experiments.selective_copying import selective_copying_batch, selective_copying_vocab, train_briefly
from lmkit.ssm.compare import mixer_costs
from lmkit.ssm.mamba import MambaConfig, MambaLM
from lmkit.transformer.model import Transformer, TransformerConfig

ROOT = Path(__file__).resolve().parents[1]
TASK = dict(length=32, n_data=4, n_symbols=8)
D_MODEL, BATCH, LR = 32, 16, 3e-3


def task_models(vocab: int) -> dict[str, torch.nn.Module]:
    """The three contenders, seeded identically."""
    models = {}
    for name in ("mamba", "mamba_lti", "transformer"):
        torch.manual_seed(0)
        if name == "transformer":
            cfg = TransformerConfig(vocab_size=vocab, d_model=D_MODEL, n_layers=2, n_heads=4, d_ff=2 * D_MODEL,
                                    max_positions=TASK["length"] + TASK["n_data"], tie_embeddings=True)
            models[name] = Transformer(cfg)
        else:
            models[name] = MambaLM(MambaConfig(vocab_size=vocab, d_model=D_MODEL, n_layers=2, d_state=8,
                                               selective=name == "mamba"))
    return models


def selective_copying(steps: int) -> dict:
    vocab = selective_copying_vocab(TASK["n_symbols"])
    held_out = selective_copying_batch(512, **TASK, generator=torch.Generator().manual_seed(123))
    results = {"task": TASK, "batch": BATCH, "lr": LR, "steps": steps, "models": {}}
    for name, model in task_models(vocab).items():
        generator = torch.Generator().manual_seed(1)  # every model sees the same training batches
        batches = partial(selective_copying_batch, BATCH, **TASK, generator=generator)
        history = train_briefly(model, batches, steps=steps, lr=LR, eval_batch=held_out, eval_every=50)
        results["models"][name] = {"parameters": sum(p.numel() for p in model.parameters()), **history.__dict__}
        print(f"{name:12s} {results['models'][name]['parameters']:6d} params: accuracy {history.accuracy[-1]:.3f} "
              f"after {history.steps[-1]} steps, {history.seconds[-1]:.0f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lengths = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    costs = mixer_costs(lengths)
    for row in costs:
        row["time_ratio_attention_over_mamba"] = row["attention_ms"] / row["mamba_ms"]
        row["memory_ratio_attention_over_mamba"] = row["attention_peak_mb"] / row["mamba_peak_mb"]
        print({k: round(v, 3) for k, v in row.items()})
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   "1 thread; the machine was shared with other jobs (times are noisy, ratios less so)",
        "mixer_costs": {"d_model": 64, "n_heads": 4, "d_state": 16, "rows": costs},
        "selective_copying": selective_copying(200 if args.quick else 1500),
    }
    path = book_results.path("mamba")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
