"""Decoding: turning next-token scores into text.

* :mod:`~lmkit.decoding.processors` — composable logits processors: temperature, top-k, top-p, repetition penalty,
  presence/frequency penalties, no-repeat n-gram, minimum length;
* :mod:`~lmkit.decoding.stopping` — stop tokens, stop strings, maximum length;
* :mod:`~lmkit.decoding.generate` — :func:`generate`: greedy decoding and sampling with the KV cache and batched,
  left-padded prompts;
* :mod:`~lmkit.decoding.beam` — :func:`beam_search` with length penalty, early-stopping modes, several returned
  sequences and an optional record of the search tree.

Each piece gives the same numbers as Hugging Face ``transformers`` (its processors and ``generate``):
the tests check it.
"""

from lmkit.decoding.beam import BeamNode, BeamSearchOutput, BeamStep, beam_search, beam_tree
from lmkit.decoding.generate import generate
from lmkit.decoding.processors import (
    MinLength,
    MinNewTokens,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    ProcessorList,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    build_processors,
)

__all__ = [
    "BeamNode",
    "BeamSearchOutput",
    "BeamStep",
    "MinLength",
    "MinNewTokens",
    "NoRepeatNGram",
    "PresenceFrequencyPenalty",
    "ProcessorList",
    "RepetitionPenalty",
    "Temperature",
    "TopK",
    "TopP",
    "beam_search",
    "beam_tree",
    "build_processors",
    "generate",
]
