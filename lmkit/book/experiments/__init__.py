"""The chapters' own experiments and data: set-ups written for the book, built on the core's algorithms.

* :mod:`~lmkit.book.experiments.objective_comparison` — T5's comparison of pre-training objectives (each fine-tuned
  on the same downstream tasks), at toy scale (chapter 15);
* :mod:`~lmkit.book.experiments.selective_copying` — Gu & Dao's selective-copying task and a short training run to
  compare models on it (chapter 19);
* :mod:`~lmkit.book.experiments.rag_questions` — the retrieval question set over Python's ``help()`` topics, with
  gold passages (chapter 18).

Import the module you need: each one is an experiment of its own, so nothing is re-exported here.
"""
