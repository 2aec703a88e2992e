"""Loaders: real checkpoints into lmkit's :class:`~lmkit.transformer.model.Transformer`.

* :mod:`~lmkit.loaders.smollm2`: SmolLM2-135M-Instruct (LLaMA architecture) from its GGUF file, dequantized;
* :mod:`~lmkit.loaders.minilm`: all-MiniLM-L6-v2 (a BERT encoder) from safetensors, with sentence embeddings;
* :mod:`~lmkit.loaders.hf`: Hugging Face ``transformers`` GPT-2 / BERT models in, a ``LlamaForCausalLM`` out.
"""
