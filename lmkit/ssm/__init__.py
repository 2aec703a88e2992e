"""State-space models: the Mamba part of the book ("Beyond the transformer").

* :mod:`~lmkit.ssm.discretize` — from the continuous ``h'(t) = A h(t) + B x(t)`` to a recurrence: zero-order hold
  (exact for a piecewise-constant input) and the simpler ``B̄ = ΔB`` that Mamba's code uses;
* :mod:`~lmkit.ssm.scan` — the linear recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` three ways: a loop, an associative
  (log-depth) scan, and a chunked scan in log space; and the selective scan ``y = SSM(Δ, A, B, C)(u)`` built on it;
* :mod:`~lmkit.ssm.mamba` — the Mamba block (Gu & Dao, 2023), residual RMSNorm blocks, a Mamba language model with
  a recurrent cache (conv state + SSM state) that obeys lmkit's decoding contract, and loading HF weights;
* :mod:`~lmkit.ssm.compare` — measured time and memory of a Mamba layer against attention, and cache sizes.

The chapter's experiment (selective copying, trained briefly) is the book's:
:mod:`lmkit.book.experiments.selective_copying`.

Nothing is re-exported here: ``compare`` loads the transformer's attention to time it against Mamba, which a
reader of the scan alone does not need; import the module you need.
"""
