"""What a language model knows, measured without generating: score answers by their log-likelihood.

* :mod:`~lmkit.probing.scoring` — log-probabilities of candidate labels after many prompts in one batched forward
  (zero-/few-shot classification, closed-book fact probing), the greedy exact-match length of a known continuation
  (memorisation), and Wilson confidence intervals for the accuracies.

Nothing is re-exported here: the part is one module; import :mod:`lmkit.probing.scoring`.
"""
