"""all-MiniLM-L6-v2 (a 6-layer BERT encoder) from safetensors, and its sentence embeddings.

The folder (``lmkit.assets.minilm_dir()``) holds ``config.json`` (a ``BertConfig``) and ``model.safetensors`` with
Hugging Face ``BertModel`` tensor names (no ``bert.`` prefix). BERT is **post-norm** (``LayerNorm(x + sublayer(x))``)
with exact-erf GELU and learned positions; the sentence embedding of sentence-transformers is the **mean of the
last hidden states over the real tokens**, then L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmkit import assets
from lmkit.loaders.hf import _load, bert_config, bert_state
from lmkit.transformer import Transformer


def load_minilm(path: str | Path | None = None) -> Transformer:
    """all-MiniLM-L6-v2 as an lmkit encoder (eval mode); ``path`` is the model folder (default
    :func:`lmkit.assets.minilm_dir`)."""
    from safetensors.torch import load_file

    folder = Path(assets.minilm_dir() if path is None else path)
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} must contain config.json and model.safetensors")
    cfg = bert_config(json.loads((folder / "config.json").read_text()))
    tensors = load_file(folder / "model.safetensors")

    def get(name: str) -> torch.Tensor:
        return tensors[name] if name in tensors else tensors[f"bert.{name}"]

    return _load(Transformer(cfg), bert_state(cfg, get))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, C)`` hidden states -> ``(B, C)`` average over the positions where ``mask`` ``(B, T)`` is True."""
    m = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


@torch.no_grad()
def embed(model: Transformer, tokenizer: Any, sentences: list[str], max_length: int = 256) -> torch.Tensor:
    """Unit-length sentence embeddings ``(N, C)``: tokenize (with ``[CLS]``/``[SEP]``, truncated to ``max_length``
    as sentence-transformers does), right-pad, encode, mean-pool over real tokens, L2-normalise.

    ``tokenizer.encode(text)`` may return a list of ids (``lmkit.tokenizers.WordPiece``) or an object with ``.ids``
    (a Hugging Face ``tokenizers.Tokenizer``).
    """
    if isinstance(sentences, str) or not sentences:
        raise TypeError("sentences must be a non-empty list of strings")
    ids = []
    for s in sentences:
        enc = tokenizer.encode(s)
        enc = list(getattr(enc, "ids", enc))
        ids.append(enc[: max_length - 1] + enc[-1:] if len(enc) > max_length else enc)  # keep the final [SEP]
    width = max(len(x) for x in ids)
    device = model.tok_emb.weight.device
    input_ids = torch.zeros(len(ids), width, dtype=torch.long, device=device)  # [PAD] is id 0 in BERT vocabularies
    mask = torch.zeros(len(ids), width, dtype=torch.bool, device=device)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = True
    hidden = model(input_ids, attention_mask=mask).hidden_states  # (N, T, C)
    return torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1)
