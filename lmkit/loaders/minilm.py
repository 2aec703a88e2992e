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
from lmkit.checks import check_int
from lmkit.loaders.hf import bert_config, bert_state
from lmkit.loaders.state_dict import load_state
from lmkit.transformer.model import Transformer
from lmkit.transformer.pooling import mean_pool
from lmkit.utils import pad_batch

UNUSED_TENSORS = ("pooler.", "embeddings.position_ids")
"""Tensors a ``BertModel`` file may hold that the encoder does not use: the pooler (sentence-transformers' mean
pooling replaces it) and the position-ids buffer."""


def load_minilm(path: str | Path | None = None) -> Transformer:
    """all-MiniLM-L6-v2 as an lmkit encoder (eval mode); ``path`` is the model folder (default
    :func:`lmkit.assets.minilm_dir`).

    The folder is checked whole: ``config.json`` must be a valid BERT config, and ``model.safetensors`` must hold
    exactly the tensors that config needs (a 3-layer config on a 6-layer file is an error, not a silent
    truncation), floating point, of the config's shapes and finite; errors name the file and the tensor.
    """
    from safetensors.torch import load_file

    folder = Path(assets.minilm_dir() if path is None else path)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (it must contain config.json and model.safetensors)")
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder} must contain config.json and model.safetensors")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from None
    try:
        cfg = bert_config(config)
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None
    try:
        tensors = load_file(weights_path)
    except Exception as err:  # safetensors' own error type for a truncated or corrupt header
        raise ValueError(f"{weights_path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    prefix = "bert." if tensors and all(k.startswith("bert.") for k in tensors) else ""
    used: dict[str, str] = {}

    def get(name: str) -> torch.Tensor:
        if prefix + name not in tensors:
            raise ValueError(f"{weights_path} has no tensor {prefix + name!r} (needed by {config_path.name}: "
                             f"{cfg.n_layers} layers)")
        used[prefix + name] = name
        return tensors[prefix + name]

    state = bert_state(cfg, get)
    extra = sorted(k for k in tensors if k not in used and not k[len(prefix):].startswith(UNUSED_TENSORS))
    if extra:
        raise ValueError(f"{weights_path} holds tensors the config does not use, e.g. {extra[:3]} "
                         f"({len(extra)} in all): {config_path.name} and the weights disagree")
    by_id = {id(t): k for k, t in tensors.items()}
    source = {name: by_id.get(id(t), name) for name, t in state.items()}
    return load_state(Transformer(cfg), state, source, origin=f"{weights_path}: ")


@torch.no_grad()
def embed(model: Transformer, tokenizer: Any, sentences: list[str], max_length: int = 256) -> torch.Tensor:
    """Unit-length sentence embeddings ``(N, C)``: tokenize (with ``[CLS]``/``[SEP]``, truncated to ``max_length``
    as sentence-transformers does), right-pad, encode, mean-pool over real tokens, L2-normalise.

    ``tokenizer.encode(text)`` may return a list of ids (``lmkit.tokenizers.WordPiece``) or an object with ``.ids``
    (a Hugging Face ``tokenizers.Tokenizer``). Checked: ``sentences`` is a non-empty list of ``str``, ``max_length``
    a positive int (a slice bound of 0 or below would keep the whole text or cut from its end).
    """
    if isinstance(sentences, str) or not sentences or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a non-empty list of strings")
    check_int("max_length", max_length, minimum=1)
    ids = []
    for s in sentences:
        enc = tokenizer.encode(s)
        enc = list(getattr(enc, "ids", enc))
        ids.append(enc[: max_length - 1] + enc[-1:] if len(enc) > max_length else enc)  # keep the final [SEP]
    input_ids, mask = pad_batch(ids, pad_id=0)  # (N, T) each, right-padded: [PAD] is id 0 in BERT vocabularies
    device = model.tok_emb.weight.device
    input_ids, mask = input_ids.to(device), mask.to(device)
    hidden = model(input_ids, attention_mask=mask).hidden_states  # (N, T, C)
    return torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1)
