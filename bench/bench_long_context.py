"""Benchmark: SmolLM2's next-token loss per position over its whole trained context (8192 tokens), with full causal
attention and with sliding windows, all through lmkit's tiled attention (:func:`lmkit.efficient.flash.flash_attention`
with ``is_causal=True`` and ``window=w``: no N×N score or mask matrix is ever built).

    python bench/bench_long_context.py            # 8192 tokens, windows 512 and 2048
    python bench/bench_long_context.py --quick    # 2048 tokens, window 256
    python bench/bench_long_context.py --sinks    # add "window 512 + 4 sinks" to the existing results

The sink run (StreamingLLM, Xiao et al., 2023) keeps the first 4 tokens visible to every query besides the window;
it is the one run that needs an (N, N) boolean mask (64 MiB at 8192), whose empty tiles the kernel skips.

The text is the book's held-out pydoc text (``lmkit.data``), continued with the training part when it is shorter than
the context. The model's own forward would build a dense additive causal mask; to keep memory linear in N this
script switches it off and lets the tiled kernel apply the causal window structurally (:func:`loss_per_position`).
Results go to
``lmkit/book/results/long_context.json`` (mean loss in bins of positions, and the wall time of each run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lmkit.efficient.flash as flash
from lmkit.book import results as book_results
from lmkit.data import pydoc_text, split_text
from lmkit.loaders.smollm2 import load_smollm2
from lmkit.tokenizers import load_smollm2_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def loss_per_position(model, ids: torch.Tensor, window: int | None, sinks: int = 0) -> torch.Tensor:
    """``(N-1,)`` next-token NLL of ``ids`` ``(N,)``, attention causal (and windowed) inside the tiled kernel.

    For the run, the model's dense mask is switched off (``attention_bias`` returns None), the tiled kernel gets
    ``is_causal=True, window=window`` instead, and the LM head is applied outside in chunks of 1024 positions."""
    original, lm_head = flash.flash_attention, model.lm_head
    mask = None
    if sinks:  # query i sees keys i-window+1 .. i and the first `sinks` tokens (causality from is_causal)
        pos = torch.arange(ids.numel())
        mask = ((pos[:, None] - pos[None, :]) < window) | (pos[None, :] < sinks)  # (N, N) bool
        window = None
    flash.flash_attention = lambda q, k, v, attn_mask=None, **kw: original(
        q, k, v, attn_mask=mask, is_causal=True, window=window, block_q=256, block_k=256,
        enable_gqa=kw.get("enable_gqa", False))
    model.attention_bias = lambda *args, **kwargs: None
    model.lm_head = None
    try:
        for block in model.blocks:
            block.attn.impl = "flash"
        h, targets = model(ids[None]).hidden_states[0, :-1], ids[1:]
        nll = torch.cat([F.cross_entropy(lm_head(h[i : i + 1024]), targets[i : i + 1024], reduction="none")
                         for i in range(0, len(targets), 1024)])
    finally:
        flash.flash_attention, model.lm_head = original, lm_head
        del model.attention_bias
    return nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sinks", action="store_true", help="only run window 512 + 4 sinks, merged into the file")
    args = parser.parse_args()
    n, windows = (2048, [256]) if args.quick else (8192, [512, 2048])
    plan = [(512, 4)] if args.sinks else [(None, 0)] + [(w, 0) for w in windows]
    torch.manual_seed(0)
    tok = load_smollm2_tokenizer()
    train, held_out = split_text(pydoc_text())
    ids = tok.encode(held_out[: n * 6])
    if len(ids) < n:
        ids += tok.encode(train[: (n - len(ids)) * 6])
    ids = torch.tensor(ids[:n])
    model = load_smollm2()
    bins = [b for b in (1, 16, 64, 256, 512, 1024, 2048, 3072, 4096, 6144) if b < n - 1] + [n - 1]  # (a, b]
    path = book_results.path("long_context_quick" if args.quick else "long_context")
    runs = json.loads(path.read_text())["runs"] if args.sinks else {}
    for window, sinks in plan:
        start = time.perf_counter()
        nll = loss_per_position(model, ids, window, sinks)
        seconds = time.perf_counter() - start
        name = "full" if window is None else f"window {window}" + (f" + {sinks} sinks" if sinks else "")
        runs[name] = {
            "window": window, "sinks": sinks, "seconds": round(seconds, 1),
            "mean_loss_by_bin": [round(nll[a - 1 : b].mean().item(), 4)
                                 for a, b in zip(bins[:-1], bins[1:], strict=True)],
            "mean_loss": round(nll.mean().item(), 4),
        }
        print(name, runs[name], flush=True)
    out = {"tokens": n, "bins": bins, "text": "held-out pydoc text (lmkit.data), continued with the training part",
           "threads": torch.get_num_threads(), "machine_note": "shared 2-core machine, loaded by other jobs",
           "runs": runs}
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
