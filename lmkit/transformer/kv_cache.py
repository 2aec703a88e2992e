"""The key/value cache: why decoding one token need not recompute the whole prefix.

In a causal decoder, the keys and values of past tokens never change once computed (a token cannot see the future).
So generation keeps them: at step ``t`` only the new token's query, key and value are computed, the new key/value are
appended to the cache, and the query attends over all ``t`` cached keys. One step costs ``O(t)`` instead of the
``O(t²)`` of re-running the prefix — at the price of memory ``2 · layers · kv_heads · head_dim · t`` numbers per
sequence, which is what multi-query / grouped-query attention shrink.

Two stores with one interface (``update``, ``length``, ``reorder``, ``crop``, ``memory_bytes``):

* :class:`KVCache` grows by concatenation: simple, but every step copies the whole cache of every layer
  (``O(t)`` bytes per layer per token, and a fresh allocation).
* :class:`StaticKVCache` preallocates ``max_length`` positions once and writes each new key/value in place
  (gpt-fast's cache): a step copies only the new token's entries, and the tensors keep their addresses.
"""

from __future__ import annotations

import torch

from lmkit.checks import check_int


class _LayerTensors:
    """What both caches share: one key and one value tensor ``(B, H_kv, ·, D)`` per layer."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def reorder(self, index: torch.Tensor) -> None:
        """Select / reorder batch rows in place (beam search keeps the caches of the surviving beams)."""
        self.keys = [k.index_select(0, index.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, index.to(v.device)) for v in self.values]

    def memory_bytes(self) -> int:
        """Bytes held by the cached tensors (for :class:`StaticKVCache`: all ``max_length`` positions)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class KVCache(_LayerTensors):
    """A growing per-layer store of keys and values ``(B, H_kv, S, D)``, filled by lmkit's ``Transformer``.

    Create it empty, pass it to every forward call of one generation; each attention layer calls :meth:`update`.
    """

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

    def crop(self, n: int) -> None:
        """Keep only the first ``n`` positions (e.g. to reject draft tokens in speculative decoding)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {n}")
        self.keys = [k[:, :, :n] for k in self.keys]
        self.values = [v[:, :, :n] for v in self.values]


class StaticKVCache(_LayerTensors):
    """Preallocated per-layer key/value buffers ``(B, H_kv, max_length, D)``, filled in place.

    >>> cache = StaticKVCache(max_length=16)
    >>> k, v = cache.update(0, torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    >>> k.shape, cache.length, cache.keys[0].shape
    (torch.Size([1, 2, 3, 8]), 3, torch.Size([1, 2, 16, 8]))

    The buffers are allocated on the first :meth:`update` of each layer, with that call's batch, heads, dtype and
    device; :meth:`update` returns views of the filled part ``[:, :, :length]``. Writing past ``max_length``
    raises ``ValueError`` (make it prompt + new tokens).
    """

    def __init__(self, max_length: int) -> None:
        check_int("max_length", max_length, minimum=1)
        super().__init__()  # keys / values: the full buffers (B, H_kv, max_length, D)
        self.max_length = max_length
        self.lengths: list[int] = []  # filled positions per layer

    @property
    def length(self) -> int:
        """Number of cached positions ``S`` (0 when empty)."""
        return self.lengths[0] if self.lengths else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new ``(B, H_kv, T, D)`` keys/values of ``layer`` in place; return ``(B, H_kv, S + T, D)`` views."""
        if layer == len(self.keys):  # first call for this layer: allocate
            B, H, _, D = k.shape
            self.keys.append(k.new_empty(B, H, self.max_length, D))
            self.values.append(v.new_empty(B, H, self.max_length, v.shape[-1]))
            self.lengths.append(0)
        elif layer > len(self.keys):
            raise ValueError(f"layers must be filled in order: got layer {layer} with {len(self.keys)} cached")
        start, end = self.lengths[layer], self.lengths[layer] + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"StaticKVCache of max_length {self.max_length} cannot hold {end} positions")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.lengths[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def crop(self, n: int) -> None:
        """Keep only the first ``n`` positions; the buffers stay allocated and later updates overwrite the rest."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {n}")
        self.lengths = [n] * len(self.lengths)
