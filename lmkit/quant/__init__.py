"""Quantization: storing and running a model's weights in fewer bits.

One module per method, all sharing :mod:`lmkit.quant.base` (``QuantizedTensor`` = packed tensors +
metadata, ``QuantizedTensor.dequantize()``, ``QuantLinear``, a layer that runs from the packed form, and
``replace_module``, which swaps a layer of a model — LoRA uses it too):

* :mod:`lmkit.quant.formats` — FP32 / FP16 / BF16: ranges and precision, with numbers.
* :mod:`lmkit.quant.absmax` — absmax (symmetric) and zero-point (asymmetric) int2..int8, per tensor,
  row, column or block, built from ``minmax_params``, ``quantize_to_grid`` and ``dequantize_grid``.
* :mod:`lmkit.quant.rtn` — group-wise round-to-nearest (the baseline for GPTQ/AWQ): ``rtn_groupwise``,
  ``rtn_quantize``, ``rtn_fake_quantize``, with ``GroupQuantized`` and ``InputStats`` that GPTQ and AWQ share.
* :mod:`lmkit.quant.dynamic8` — block-wise dynamic 8-bit quantization (Dettmers et al. 2021) and
  ``AdamW8bit`` with ``StableEmbedding``.
* :mod:`lmkit.quant.nf4` — NormalFloat4 with double quantization (QLoRA): ``quantize_nf4`` / ``dequantize_nf4``.
* :mod:`lmkit.quant.int8_matmul` — LLM.int8(): vector-wise int8 matmul + outlier decomposition.
* :mod:`lmkit.quant.ggml` — llama.cpp block formats (Q4_0 ... Q8_0, Q4_K, Q6_K), byte-exact.
* :mod:`lmkit.quant.gguf_writer` — write a re-quantized GGUF file.
* :mod:`lmkit.quant.gptq`, :mod:`lmkit.quant.awq`, :mod:`lmkit.quant.driver` — GPTQ and AWQ.

Nothing is re-exported here: the methods are alternatives, and loading one should not load the others'
tables and kernels; import the module you need.
"""
