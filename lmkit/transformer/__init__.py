"""The transformer, one idea per module (the book's part I).

* :mod:`~lmkit.transformer.masks` — who may attend to whom: bidirectional, causal, prefix-LM, padding;
* :mod:`~lmkit.transformer.positions` — sinusoidal, learned, ALiBi and RoPE (with its scalings);
* :mod:`~lmkit.transformer.attention` — multi-head, grouped-query and multi-query attention;
* :mod:`~lmkit.transformer.norms` — LayerNorm, RMSNorm (and BatchNorm for comparison);
* :mod:`~lmkit.transformer.ffn` — the feed-forward sublayer: ReLU, GELU, SwiGLU;
* :mod:`~lmkit.transformer.kv_cache` — the key/value cache of decoding;
* :mod:`~lmkit.transformer.pooling` — one vector per sequence (mean pooling of sentence embeddings);
* :mod:`~lmkit.transformer.model` — :class:`~lmkit.transformer.model.TransformerConfig` and the model built from
  these pieces: BERT, GPT-2 or LLaMA by configuration, and an encoder–decoder.
* :mod:`~lmkit.transformer.counting` — parameter counts and FLOPs per token of the published models (GPT-1/2/3, BERT,
  RoBERTa, T5), computed from their papers' configurations.

Nothing is re-exported here: each section of the book reads one piece (a mask, a position scheme), and
``model`` assembles them all; import the module you need.
"""
