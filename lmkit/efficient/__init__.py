"""Efficient attention (the book's chapter on complexity).

* :mod:`~lmkit.efficient.flash` — exact tiled attention with the online softmax (FlashAttention), in PyTorch;
* :mod:`~lmkit.efficient.flash_triton` — the same algorithm as Triton kernels (imports Triton: load it on demand);
* :mod:`~lmkit.efficient.sparse` — the fixed sparse patterns of Child et al. and sliding-window attention;
* :mod:`~lmkit.efficient.cost` — the accountant: HBM bytes, FLOPs, KV-cache bytes and measured peak memory.

Nothing is re-exported here: ``flash_triton`` imports Triton, and the model must be able to load without any
attention kernel (``tests/core/test_layout.py``); import the module you need.
"""
