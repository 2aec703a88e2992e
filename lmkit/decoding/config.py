"""``GenerationConfig``: every setting of one decoding call, in one dataclass.

:func:`~lmkit.decoding.generate.generate`, :func:`~lmkit.decoding.beam.beam_search` and
:func:`~lmkit.decoding.processors.build_processors` all read this one object, so a setting is declared, defaulted and
documented once. The names and defaults are Hugging Face's ``GenerationConfig``'s (plus OpenAI's presence and
frequency penalties), so a call translates one to one::

    >>> config = GenerationConfig(max_new_tokens=32, do_sample=True, temperature=0.7, top_p=0.9)
    >>> generate(model, ids, config=config)                       # or, the same call:
    >>> generate(model, ids, 32, do_sample=True, temperature=0.7, top_p=0.9)

Settings of the loop itself (lengths, beams, return count) are checked here; the processors' parameters
(temperature, top-k, top-p, penalties) are checked by the processors, when :func:`build_processors` makes them —
both before the model runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmkit.checks import check_int, check_number
from lmkit.decoding.stopping import eos_tensor


@dataclass(frozen=True)
class GenerationConfig:
    """The settings of one ``generate`` / ``beam_search`` call.

    * mode: ``do_sample=False, num_beams=1`` is greedy; ``do_sample=True`` samples from the processed distribution
      (``temperature``, ``top_k``, ``top_p``); ``num_beams > 1`` is beam search (``length_penalty`` divides a
      hypothesis' summed log-probability by ``length ** length_penalty``; ``early_stopping`` is True, False or
      ``"never"``, as in HF), returning the best ``num_return_sequences``.
    * penalties: ``repetition_penalty`` (CTRL, prompt included), ``presence_penalty`` / ``frequency_penalty``
      (OpenAI, generated tokens only), ``no_repeat_ngram_size``.
    * length: ``max_new_tokens``; ``min_length`` (prompt included) or ``min_new_tokens`` forbid EOS until reached.
    * stopping: ``eos_token_id`` (one id or several), ``stop_strings`` (need a ``decode`` function); finished rows
      are filled with ``pad_token_id`` (default: the first EOS id; see
      :func:`~lmkit.decoding.step.prepare_decoding`).
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    min_new_tokens: int = 0
    eos_token_id: int | Sequence[int] | None = None
    pad_token_id: int | None = None
    stop_strings: str | Sequence[str] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("num_beams", self.num_beams, minimum=1)
        check_int("num_return_sequences", self.num_return_sequences, minimum=1)
        check_number("length_penalty", self.length_penalty)
        eos_tensor(self.eos_token_id)  # each id a non-negative int (the vocabulary is checked against the model)
        if self.pad_token_id is not None:
            check_int("pad_token_id", self.pad_token_id, minimum=0)
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.num_beams > 1:  # beam search returns some of its num_beams hypotheses
            check_int("num_return_sequences", self.num_return_sequences, minimum=1, maximum=self.num_beams)
        if self.num_beams == 1 and self.num_return_sequences > 1 and not self.do_sample:
            raise ValueError("num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")

    @classmethod
    def resolve(cls, config: GenerationConfig | None, **settings: Any) -> GenerationConfig:
        """``config`` (default: all defaults) with ``settings`` overriding its fields; ``max_new_tokens=None`` means
        "keep the config's", so ``generate(model, ids, config=c)`` uses ``c.max_new_tokens``. An unknown name is a
        ``TypeError`` listing the known ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"unknown generation setting(s) {unknown}; GenerationConfig has {names}")
        if settings.get("max_new_tokens", 0) is None:
            del settings["max_new_tokens"]
        return cls(**settings) if config is None else dataclasses.replace(config, **settings)
