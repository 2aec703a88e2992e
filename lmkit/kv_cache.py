"""The key/value cache: why decoding one token need not recompute the whole prefix.

In a causal decoder, the keys and values of past tokens never change once computed (a token cannot see the future).
So generation keeps them: at step ``t`` only the new token's query, key and value are computed, the new key/value are
appended to the cache, and the query attends over all ``t`` cached keys. One step costs ``O(t)`` instead of the
``O(t²)`` of re-running the prefix — at the price of memory ``2 · layers · kv_heads · head_dim · t`` numbers per
sequence, which is what multi-query / grouped-query attention shrink.
"""

from __future__ import annotations

import torch


class KVCache:
    """A growing per-layer store of keys and values ``(B, H_kv, S, D)``, filled by lmkit's ``Transformer``.

    Create it empty, pass it to every forward call of one generation; each attention layer calls :meth:`update`.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        """Number of cached positions ``S`` (0 when empty)."""
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new ``(B, H_kv, T, D)`` keys/values of ``layer``; return all of them ``(B, H_kv, S + T, D)``."""
        if layer == len(self.keys):  # first call for this layer
            self.keys.append(k)
            self.values.append(v)
        elif layer < len(self.keys):
            self.keys[layer] = torch.cat((self.keys[layer], k), dim=2)
            self.values[layer] = torch.cat((self.values[layer], v), dim=2)
        else:
            raise ValueError(f"layers must be filled in order: got layer {layer} with {len(self.keys)} cached")
        return self.keys[layer], self.values[layer]

    def reorder(self, index: torch.Tensor) -> None:
        """Select / reorder batch rows in place (beam search keeps the caches of the surviving beams)."""
        self.keys = [k.index_select(0, index.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, index.to(v.device)) for v in self.values]

    def crop(self, n: int) -> None:
        """Keep only the first ``n`` positions (e.g. to reject draft tokens in speculative decoding)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {n}")
        self.keys = [k[:, :, :n] for k in self.keys]
        self.values = [v[:, :, :n] for v in self.values]

    def memory_bytes(self) -> int:
        """Bytes held by the cached tensors."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
