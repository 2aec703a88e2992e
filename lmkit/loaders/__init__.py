"""Loaders: real checkpoints into lmkit's :class:`~lmkit.transformer.model.Transformer`.

* :mod:`~lmkit.loaders.smollm2`: SmolLM2-135M-Instruct (LLaMA architecture) from its GGUF file, dequantized;
* :mod:`~lmkit.loaders.minilm`: all-MiniLM-L6-v2 (a BERT encoder) from safetensors, with sentence embeddings;
* :mod:`~lmkit.loaders.hf`: Hugging Face ``transformers`` GPT-2 / BERT models in, a ``LlamaForCausalLM`` out;
* :mod:`~lmkit.loaders.state_dict`: what they all share once the tensors have lmkit's names: the checked loading
  (names, shapes, dtypes, finite values) and the tied LM head.

Nothing is re-exported here: each loader brings in its format's library (``gguf``, ``safetensors``,
``transformers``); import the loader you need.
"""
