"""An exact cosine-similarity index: every query is compared with every stored vector.

With unit-length embeddings (MiniLM's are L2-normalised) cosine similarity is a dot product, so searching ``Q``
queries against ``N`` vectors of width ``d`` is one ``(Q, d) @ (d, N)`` matrix product followed by a top-k —
``N * d`` multiply-adds and ``4 * N * d`` bytes read per query. That is exact (it returns the true top-k, the same
ranking as ``sentence_transformers.util.semantic_search``, which the tests check) and, up to about a million
vectors, fast enough. Beyond that, approximate indexes take over: FAISS's IVF (search only the clusters nearest the
query) and product quantization (compress each vector to a few bytes), or HNSW graphs (greedy walks over a
neighbour graph, about ``log N`` hops): they read a small fraction of the vectors and may miss some true neighbours.
"""

from __future__ import annotations

import torch

from lmkit.checks import check_int


class ExactIndex:
    """Brute-force cosine top-k over ``embeddings`` ``(N, d)`` (normalised on the way in).

    >>> index = ExactIndex(torch.eye(3))
    >>> index.search(torch.tensor([[0.0, 1.0, 0.1]]), k=2)[1].tolist()
    [[1, 2]]
    """

    def __init__(self, embeddings: torch.Tensor) -> None:
        """Checked: ``embeddings`` is a floating-point ``(N, d)`` tensor with ``N, d >= 1`` and finite values (a NaN
        row would score NaN against every query, and ``topk`` ranks NaN first)."""
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
            raise ValueError("embeddings must be a floating-point (N, d) tensor")
        if embeddings.shape[0] == 0:
            raise ValueError("an index needs at least one vector")
        if embeddings.shape[1] == 0:
            raise ValueError(f"embeddings must have width d >= 1, got shape {tuple(embeddings.shape)}")
        _check_finite("embeddings", embeddings)
        self.vectors = torch.nn.functional.normalize(embeddings, dim=-1)  # (N, d)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, queries: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)``, each ``(Q, k)``, best first: the ``k`` stored vectors most cosine-similar to each query.
        ``queries`` may be ``(d,)`` or ``(Q, d)`` (a tensor of finite values); ``k`` is capped at the index size."""
        check_int("k", k, minimum=1)
        if not isinstance(queries, torch.Tensor):
            raise TypeError(f"queries must be a torch.Tensor of embeddings, got {type(queries).__name__}")
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries must be (Q, {self.vectors.shape[1]}), got {tuple(queries.shape)}")
        _check_finite("queries", queries)
        q = torch.nn.functional.normalize(queries.to(self.vectors), dim=-1)
        scores = q @ self.vectors.T  # (Q, N) cosine similarities
        return torch.topk(scores, min(k, len(self)), dim=-1)  # sorted, largest first


def _check_finite(name: str, x: torch.Tensor) -> None:
    """A ``ValueError`` naming the first row of ``x`` that holds a NaN or an inf."""
    bad = (~torch.isfinite(x)).any(dim=-1).nonzero()
    if bad.numel():
        raise ValueError(f"{name} must be finite, got NaN or inf in row {int(bad[0])}")
