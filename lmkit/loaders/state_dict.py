"""Weights into a built :class:`~lmkit.transformer.model.Transformer`, checked: the one step every loader shares.

A loader's own work is *translation*: it reads a file format (GGUF, safetensors, a Hugging Face model) and names each
tensor as lmkit does (``blocks.0.attn.q_proj.weight`` …), permuting or transposing where the layouts differ. What
comes after is the same for all of them and lives here, in :func:`load_state`:

* a tied LM head may be left out: it *is* the token embedding (one matrix reads tokens in and writes them out);
* every name must have its place in the model and every parameter must be given (a 3-layer config on a 6-layer
  file is an error, not a silent truncation);
* each tensor must be floating point, finite, and of the shape the config gives that parameter — otherwise the
  config and the weights disagree, and the message says which tensor, by the name it has in the file.

A model built on PyTorch's ``meta`` device (parameters with shapes but no storage: nothing is allocated for random
weights that would be overwritten at once) takes the tensors themselves, and then gets its tie and its fixed tables
(RoPE's frequencies, the sinusoidal table) back. Left out: sharded checkpoints and lazy loading — lmkit's models fit
in memory whole.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lmkit.transformer.model import Transformer


def check_state(
    model: Transformer, state: Mapping[str, torch.Tensor], source: Mapping[str, str] | None = None, origin: str = ""
) -> None:
    """Raise unless ``state`` fills ``model`` exactly: the same names, each tensor floating point, finite and of the
    parameter's shape. ``source`` maps lmkit names to the names in the file and ``origin`` names the file (with a
    trailing ``": "``), for the messages::

        ValueError: GGUF file tiny.gguf: tensor 'blk.0.attn_v.weight' has shape (8, 32), the config needs (16, 32)
    """
    source = source or {}
    expected = model.state_dict()
    missing = sorted(source.get(name, name) for name in expected.keys() - state.keys())
    if missing:
        raise ValueError(f"{origin}no tensor for {missing[:5]} ({len(missing)} in all): the config needs them")
    for name, t in state.items():
        shown = f"{origin}tensor {source.get(name, name)!r}"
        if name not in expected:
            raise ValueError(f"{shown} has no place in the model")
        if not t.is_floating_point():
            raise TypeError(f"{shown} is {t.dtype}: model weights must be floating point")
        if t.shape != expected[name].shape:
            raise ValueError(f"{shown} has shape {tuple(t.shape)}, the config needs {tuple(expected[name].shape)} "
                             "(the config and the weights disagree)")
        if not torch.isfinite(t).all():
            raise ValueError(f"{shown} holds non-finite values (NaN or inf)")


def load_state(
    model: Transformer,
    state: Mapping[str, torch.Tensor],
    source: Mapping[str, str] | None = None,
    origin: str = "",
) -> Transformer:
    """Copy ``state`` (lmkit parameter names) into ``model`` strictly (:func:`check_state`) and return it in eval mode.
    A tied LM head may be left out of ``state``: it is the embedding.

    A built model keeps its parameters' dtype (the tensors are copied into them); a model on the ``meta`` device takes
    the tensors themselves, dtype included (``load_state_dict(..., assign=True)``), then its tie and its buffers are
    rebuilt."""
    if model.config.tie_embeddings and "tok_emb.weight" in state and "lm_head.weight" not in state:
        state = {**state, "lm_head.weight": state["tok_emb.weight"]}  # last: a mismatch is named as the embedding's
    check_state(model, state, source, origin)
    on_meta = model.tok_emb.weight.is_meta
    model.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True, assign=on_meta)
    if on_meta:
        if model.config.tie_embeddings:
            model.lm_head.weight = model.tok_emb.weight  # assign=True gave the head a parameter of its own
        model.rebuild_buffers()
    return model.eval()
