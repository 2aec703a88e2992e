"""When does a sequence stop? On a stop token (EOS), on a stop string, or at the maximum length.

A criterion is a callable ``criterion(input_ids (B, L)) -> BoolTensor (B,)``: True where the row has just finished.
:class:`StopTokens` looks at the last token; :class:`StopStrings` decodes the generated tokens and looks for any of
the stop strings (a stop string can span several tokens, and one token can hold more than a stop string, so this
must be checked on text, not on ids); :class:`MaxLength` fires once the sequence is ``max_length`` long.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmkit.checks import check_int, check_token_ids


def eos_tensor(eos_token_id: int | Sequence[int] | None, vocab_size: int | None = None) -> torch.Tensor | None:
    """Normalise ``eos_token_id`` (an id, a list of ids, an integer tensor of them, or None) to a 1-D LongTensor or
    None, validating it: each id a non-negative int, and below ``vocab_size`` when given."""
    if eos_token_id is None:
        return None
    if isinstance(eos_token_id, torch.Tensor):  # HF accepts a tensor too, a 0-d one included
        eos_token_id = check_token_ids("eos_token_id", eos_token_id, ndim=None).reshape(-1).tolist()
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids:
        raise ValueError("eos_token_id must be a non-negative int or a non-empty list of them, got []")
    for i in ids:
        check_int("eos_token_id", i, minimum=0)
    return check_token_ids("eos_token_id", torch.tensor(ids, dtype=torch.long), vocab_size, ndim=1)


class StopTokens:
    """Finished when the last token is one of ``token_ids`` (usually the EOS id(s))."""

    def __init__(self, token_ids: int | Sequence[int]):
        self.token_ids = eos_tensor(token_ids)

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.token_ids.to(input_ids.device))


class StopStrings:
    """Finished when the text generated after the first ``prompt_length`` tokens contains one of ``stop_strings``.

    ``decode`` turns a list of ids into text (e.g. ``tokenizer.decode``). The check runs after every token, so the
    first time a stop string appears is the step whose token completed it; the text may run a little past the stop
    string when that token holds more characters, exactly as in HF's ``stop_strings``.
    """

    def __init__(self, stop_strings: str | Sequence[str], decode: Callable[[list[int]], str], prompt_length: int):
        strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        if not strings or not all(isinstance(s, str) and s for s in strings):
            raise ValueError(f"stop_strings must be a non-empty string or list of them, got {stop_strings!r}")
        if not callable(decode):
            raise TypeError("stop strings need a decode function (ids -> text), e.g. tokenizer.decode")
        self.stop_strings = strings
        self.decode = decode
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids[:, self.prompt_length :].tolist()
        done = [any(s in self.decode([t for t in row if t >= 0]) for s in self.stop_strings) for row in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class MaxLength:
    """Finished when the sequence (prompt included) has ``max_length`` tokens."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.max_length, device=input_ids.device)


class StoppingCriteria(list):
    """Any criterion fires → the row is finished."""

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            done |= criterion(input_ids)
        return done


def stopping_criteria(
    eos_token_id: int | Sequence[int] | None,
    stop_strings: str | Sequence[str] | None,
    decode: Callable[[list[int]], str] | None,
    prompt_length: int,
    max_length: int | None = None,
) -> StoppingCriteria:
    """The stop conditions of one decoding call: the length limit (when ``max_length`` is given; ``generate`` counts
    steps instead), EOS id(s) and stop strings (which need ``decode``)."""
    criteria = StoppingCriteria()
    if max_length is not None:
        criteria.append(MaxLength(max_length))
    if eos_token_id is not None:
        criteria.append(StopTokens(eos_token_id))
    if stop_strings is not None:
        if decode is None:
            raise ValueError("stop_strings need decode= (a function ids -> text, e.g. tokenizer.decode)")
        criteria.append(StopStrings(stop_strings, decode, prompt_length))
    return criteria
