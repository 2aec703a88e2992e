"""Transformers for time series.

* :mod:`~lmkit.timeseries.informer` — Informer's ProbSparse self-attention (query sparsity measure, top-u active
  queries, lazy queries from the mean / cumulative sum of V) and self-attention distilling;
* :mod:`~lmkit.timeseries.timellm` — Time-LLM: patching with RevIN, reprogramming onto text prototypes,
  prompt-as-prefix, a frozen lmkit language model, the output projection;
* :mod:`~lmkit.timeseries.forecasting` — a synthetic series, windows, last-value and linear baselines, MSE / MAE.

Nothing is re-exported here: Time-LLM loads lmkit's transformer, which Informer and the baselines do not need;
import the module you need.
"""
