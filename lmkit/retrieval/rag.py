"""Retrieval-augmented generation: embed the question, fetch the nearest chunks, put them in the prompt, answer.

The pieces, each small enough to read in one sitting:

* :class:`Retriever` embeds chunks with all-MiniLM-L6-v2 (:func:`lmkit.loaders.minilm.embed`) into an
  :class:`~lmkit.retrieval.index.ExactIndex` and returns the ``k`` chunks nearest a question;
* :func:`build_prompt` writes the retrieved passages and the question into SmolLM2's chat template;
* :func:`answer` generates a short greedy answer with :func:`lmkit.decoding.generate`;
* :func:`is_correct` is the scoring rule; :func:`recall_at_k` measures retrieval against the gold passages.

What RAG buys: the language model no longer has to *remember* a fact from pre-training, only to *read* it from its
context. What it costs: the prompt grows by ``k`` chunks (prefill time), and when retrieval misses the gold passage
the model is shown plausible but irrelevant text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from lmkit.checks import check_int
from lmkit.decoding import generate
from lmkit.loaders.minilm import embed
from lmkit.retrieval.chunking import Chunk
from lmkit.retrieval.index import ExactIndex

INSTRUCTION = "Answer the question in a few words."
CONTEXT_INSTRUCTION = "Answer the question in a few words, using the context."


class Retriever:
    """MiniLM embeddings of ``chunks`` in an exact cosine index.

    ``encoder`` / ``tokenizer`` are :func:`lmkit.loaders.minilm.load_minilm` and
    :func:`lmkit.tokenizers.load_minilm_tokenizer`. Chunks are embedded in batches of similar length (padding costs
    compute), at most ``max_length`` tokens each, as sentence-transformers does for this model (256).

    Checked: ``chunks`` is a non-empty list of :class:`Chunk` (plain strings have no document or span to judge
    relevance by: :func:`~lmkit.retrieval.chunking.chunk_documents` makes them), ``batch_size`` a positive int.
    """

    def __init__(self, encoder: Any, tokenizer: Any, chunks: Sequence[Chunk], batch_size: int = 32,
                 max_length: int = 256) -> None:
        if not isinstance(chunks, (list, tuple)) or not chunks:
            raise ValueError(f"a Retriever needs at least one chunk: chunks must be a non-empty list of Chunk, got "
                             f"{chunks!r:.60}")
        if not all(isinstance(c, Chunk) for c in chunks):
            raise TypeError("chunks must be Chunk objects (from chunk_documents), got "
                            f"{type(next(c for c in chunks if not isinstance(c, Chunk))).__name__}")
        check_int("batch_size", batch_size, minimum=1)
        self.encoder, self.tokenizer, self.chunks, self.max_length = encoder, tokenizer, list(chunks), max_length
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].text))
        vectors = torch.empty(len(chunks), encoder.config.d_model)
        for i in range(0, len(order), batch_size):
            ids = order[i : i + batch_size]
            vectors[ids] = embed(encoder, tokenizer, [chunks[j].text for j in ids], max_length).float().cpu()
        self.index = ExactIndex(vectors)

    def embed_queries(self, questions: Sequence[str]) -> torch.Tensor:
        """Unit-length question embeddings ``(Q, d)`` of a list of ``str`` (one ``str`` is refused, not read as a
        list of characters)."""
        if isinstance(questions, str):
            raise TypeError("questions must be a list of str, got a str: wrap a single question in a list")
        return embed(self.encoder, self.tokenizer, list(questions), self.max_length).float().cpu()

    def rank(self, questions: Sequence[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, chunk ids)``, each ``(Q, k)``, best first."""
        return self.index.search(self.embed_queries(questions), k)

    def retrieve(self, question: str, k: int = 3) -> list[Chunk]:
        """The ``k`` chunks nearest ``question`` (a ``str``), best first."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        _, ids = self.rank([question], k)
        return [self.chunks[i] for i in ids[0].tolist()]


def recall_at_k(ranked: Sequence[Sequence[bool]], k: int) -> float:
    """Fraction of queries with a relevant item among their first ``k`` results (``ranked[q][i]``: is the ``i``-th
    result of query ``q`` relevant?): a list of rows or a ``(Q, n)`` bool tensor, with ``k`` a positive int."""
    check_int("k", k, minimum=1)
    if not isinstance(ranked, (Sequence, torch.Tensor)) or isinstance(ranked, str):
        raise TypeError(f"ranked must be a list of rows of bools (one per query), got {type(ranked).__name__}")
    if len(ranked) == 0:
        raise ValueError("recall needs at least one query")
    return sum(any(row[:k]) for row in ranked) / len(ranked)


def build_prompt(question: str, passages: Sequence[str] = (), system: str | None = None) -> str:
    """SmolLM2's chat prompt for ``question``, with numbered context ``passages`` before it (none: closed-book).

    Checked: ``question`` is a ``str`` with a word in it, ``passages`` a list of ``str`` (one ``str`` would be numbered
    character by character), ``system`` a ``str`` or None.
    """
    from lmkit.loaders.smollm2 import SYSTEM_PROMPT, chat_prompt

    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError(f"question must hold at least one word, got {question!r}")
    if isinstance(passages, str) or not all(isinstance(p, str) for p in passages):
        raise TypeError(f"passages must be a list of str, got {passages!r:.60}")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be a str or None, got {type(system).__name__}")
    if passages:
        context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
        user = f"{CONTEXT_INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {question}"
    else:
        user = f"{INSTRUCTION}\n\nQuestion: {question}"
    return chat_prompt(user, system or SYSTEM_PROMPT)


def answer(model: Any, tokenizer: Any, question: str, passages: Sequence[str] = (), max_new_tokens: int = 16) -> str:
    """SmolLM2's greedy answer to ``question`` given ``passages`` (the text after the prompt, up to ``<|im_end|>``)."""
    prompt = tokenizer.encode(build_prompt(question, passages))
    eos = tokenizer.encode("<|im_end|>")
    if len(eos) != 1:
        raise ValueError("the tokenizer has no single <|im_end|> token: is this SmolLM2's tokenizer?")
    device = next(model.parameters()).device
    out = generate(model, torch.tensor([prompt], device=device), max_new_tokens, eos_token_id=eos[0])
    new = [t for t in out[0, len(prompt):].tolist() if t != eos[0]]
    return tokenizer.decode(new).strip()


def is_correct(generated: str, answers: Sequence[str], question: str | None = None) -> bool:
    """The scoring rule: correct when one of ``answers`` occurs in ``generated`` as a whole token — case-insensitive,
    not inside a longer word (``"None"`` matches "It returns None." but not "Nonetheless").

    With ``question``, echoes do not count: a question word that contains an accepted answer without being it
    (``-1**2`` for the answer ``-1``) is deleted from the reply before matching.

    Checked: ``generated`` is a ``str``, ``answers`` a non-empty list of non-blank ``str`` (a ``str`` would be read as
    its characters, and ``""`` matches everywhere), ``question`` a ``str`` or None.
    """
    if not isinstance(generated, str):
        raise TypeError(f"generated must be a str, got {type(generated).__name__}")
    if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError(f"answers must be a non-empty list of non-blank str, got {answers!r}")
    if question is not None and not isinstance(question, str):
        raise TypeError(f"question must be a str or None, got {type(question).__name__}")
    if question is not None:
        for token in question.split():
            token = token.strip(".,;:!?\"'`()")
            if any(_matches(a, token) and token.lower() != a.lower() for a in answers):
                generated = re.sub(re.escape(token), " ", generated, flags=re.IGNORECASE)
    return any(_matches(a, generated) for a in answers)


def _matches(answer: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, flags=re.IGNORECASE) is not None
