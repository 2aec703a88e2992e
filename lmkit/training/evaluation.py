"""Perplexity: the exponential of the average next-token negative log-likelihood.

``PPL = exp(-(1/N) Σ log p(x_t | x_<t))``. A perplexity of 13 means the model is, on average, as unsure as if it
picked uniformly among 13 tokens. The book's standard evaluation text is the first 2048 tokens of the held-out part
of ``lmkit.data.split_text(lmkit.data.pydoc_text())`` (see :func:`evaluation_tokens`).

The text is cut into **non-overlapping** windows; inside a window every token but the first is predicted from the
tokens before it in that window. (A sliding window with overlap gives every token more context and a lower number;
compare numbers only when computed the same way.)

Perplexity is *per token*, so two models with different tokenizers cannot be compared by it: a tokenizer with shorter
tokens makes each prediction easier and the perplexity lower. **Bits per byte** (:func:`bits_per_byte`) divides the
same total log-likelihood by the text's UTF-8 bytes instead: ``bpb = (N_tokens / N_bytes) · log2(PPL)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lmkit.checks import check_int, check_token_ids
from lmkit.utils import eval_mode


def perplexity(model: nn.Module, token_ids: torch.Tensor, window: int = 2048) -> float:
    """Perplexity of ``model`` on ``token_ids`` ``(N,)`` scored in non-overlapping windows of ``window`` tokens.

    ``model(ids (1, T)).logits`` must give ``(1, T, V)`` next-token logits (lmkit's forward contract).
    """
    return math.exp(token_nll(model, token_ids, window).double().nanmean().item())


@torch.no_grad()
def token_nll(model: nn.Module, token_ids: torch.Tensor, window: int = 2048) -> torch.Tensor:
    """``(N,)`` negative log-likelihood in nats of each token given the tokens before it in its window (the windows of
    :func:`perplexity`); NaN at each window's first token, which nothing predicts. ``exp(nanmean)`` is the
    perplexity; the values per position show how the loss falls as the context grows."""
    check_token_ids("token_ids", token_ids, ndim=1)
    if token_ids.numel() < 2:
        raise ValueError(f"token_ids must hold at least 2 token ids, got {token_ids.numel()}")
    check_int("window", window, minimum=2)
    device = next(model.parameters()).device
    out = torch.full((token_ids.numel(),), float("nan"))
    with eval_mode(model):
        for start in range(0, token_ids.numel(), window):
            chunk = token_ids[start : start + window].to(device)
            if chunk.numel() < 2:
                break
            logits = model(chunk[None]).logits[0, :-1].float()
            out[start + 1 : start + chunk.numel()] = nn.functional.cross_entropy(
                logits, chunk[1:], reduction="none").cpu()
    return out


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte of a text whose predicted tokens have summed negative log-likelihood ``total_nll`` (nats)
    and cover ``n_bytes`` bytes: ``total_nll / (ln 2 · n_bytes)``. A model that knows nothing spends 8 bits a byte.

    >>> round(bits_per_byte(math.log(2) * 80, 10), 6)  # 80 bits over 10 bytes
    8.0
    """
    check_int("n_bytes", n_bytes, minimum=1)
    return total_nll / (math.log(2) * n_bytes)


def evaluation_tokens(encode: Callable[[str], list[int]], n_tokens: int = 2048) -> torch.Tensor:
    """The book's standard evaluation tokens: the first ``n_tokens`` of the held-out pydoc text, encoded by
    ``encode`` (e.g. ``lmkit.tokenizers.load_smollm2_tokenizer().encode``)."""
    from lmkit.data import pydoc_text, split_text

    held_out = split_text(pydoc_text())[1]
    ids = encode(held_out[: n_tokens * 8])  # a token is far shorter than 8 characters in this text
    if len(ids) < n_tokens:
        ids = encode(held_out)
    return torch.tensor(ids[:n_tokens], dtype=torch.long)
