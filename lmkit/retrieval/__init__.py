"""Retrieval-augmented generation (RAG) with lmkit's own models.

* :mod:`~lmkit.retrieval.chunking` — documents into overlapping word windows, and which chunks hold a gold passage;
* :mod:`~lmkit.retrieval.index` — :class:`ExactIndex`, brute-force cosine top-k (the tests compare it with
  ``sentence_transformers.util.semantic_search``);
* :mod:`~lmkit.retrieval.rag` — MiniLM retriever, prompt assembly, SmolLM2 answers, recall@k and the scoring rule.

The book's question set over Python's ``help()`` topics is the book's data: :mod:`lmkit.book.experiments.rag_questions`.
"""

from lmkit.retrieval.chunking import Chunk, chunk_documents, chunk_words, covers, evidence_spans, normalize
from lmkit.retrieval.index import ExactIndex
from lmkit.retrieval.rag import Retriever, answer, build_prompt, is_correct, recall_at_k

__all__ = [
    "Chunk",
    "ExactIndex",
    "Retriever",
    "answer",
    "build_prompt",
    "chunk_documents",
    "chunk_words",
    "covers",
    "evidence_spans",
    "is_correct",
    "normalize",
    "recall_at_k",
]
