"""Training (the book's part on objectives, the training recipe and fine-tuning).

* :mod:`~lmkit.training.objectives` — BERT masking, T5 span corruption, next-token loss, scheduled sampling;
* :mod:`~lmkit.training.recipe` — AdamW, warm-up + cosine schedule, gradient clipping, a Trainer with checkpoints;
* :mod:`~lmkit.training.checkpoint` — the Trainer's checkpoints: written atomically, checked before restored;
* :mod:`~lmkit.training.evaluation` — perplexity, and the book's one standard evaluation slice;
* :mod:`~lmkit.training.finetune` — GPT-1 and BERT classification heads, gradual unfreezing;
* :mod:`~lmkit.training.lora` — LoRA and QLoRA.

Nothing is re-exported here: ``lora`` loads the quantizers (QLoRA), which the recipe and the objectives do
not need; import the module you need.
"""
