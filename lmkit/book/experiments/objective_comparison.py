"""T5's comparison of pre-training objectives (Raffel et al., 2020, Section 3.3.1, Table 4), at toy scale.

T5 pre-trained one encoder–decoder with each objective — "BERT-style" denoising, prefix language modelling,
deshuffling — for the same number of steps on the same data, then fine-tuned every pre-trained model the same way on
the same downstream tasks and compared the downstream scores (GLUE 82.96 / 80.69 / 73.17). The pre-training losses
themselves are *not* comparable: a BERT-style target is the whole text, 85% of which the encoder sees uncorrupted
and the decoder can copy; a prefix-LM target is the unseen rest of the text; a deshuffling target is the whole text
again, but with its order to recover. Only a common downstream measure compares them.

:func:`compare_objectives` runs that protocol small enough for seconds of one CPU thread:

1. a character vocabulary learned from the training text, plus pad, decoder-start, end, mask and sentinel ids
   (:func:`toy_vocabulary`) — characters, because a tiny model learns their statistics in a hundred steps;
2. for each seed, one initialisation of a tiny :class:`~lmkit.transformer.model.EncoderDecoder`, copied for every
   objective and pre-trained for the same number of steps on the *same* windows of the training text (only the
   corruption differs; pairs from :func:`lmkit.training.objectives.objective_pair`), with the LLaMA recipe of
   :class:`~lmkit.training.recipe.Trainer`;
3. the same fine-tuning of every model — and of the un-pre-trained initialisation, the "no pre-training" baseline —
   on two text-to-text downstream tasks built from the *held-out* text (:func:`word_task_examples`: "next: …" →
   the next word, "fill: … ___ …" → the missing word), mixed T5-style with a task prefix;
4. per task, the held-out loss (nats per target character) and the character accuracy on the other half of the
   held-out text, which no model saw in any form.

What is left out, and why a toy can disagree with T5: T5 pre-trained a 220M-parameter model on 2^35 ≈ 34B tokens
of C4 and fine-tuned on GLUE, SuperGLUE, SQuAD, CNN/DM and WMT; here a model of ~3·10^4 parameters reads ~4·10^4
characters. At that scale pre-training transfers spelling statistics — which every objective teaches — and hardly
any syntax or meaning, where T5 found the objectives differ; the spread between seeds is as large as the differences
between objectives.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_int
from lmkit.tokenizers.char import CharTokenizer
from lmkit.training.objectives import IGNORE_INDEX, T5_OBJECTIVES, objective_pair, span_counts, t5_sentinel_ids
from lmkit.training.recipe import TrainConfig, Trainer
from lmkit.transformer.model import EncoderDecoder, TransformerConfig
from lmkit.utils import eval_mode, pad_batch

NO_PRETRAINING = "none"
"""The baseline's name in :func:`compare_objectives`: the same initialisation, fine-tuned without pre-training."""


@dataclass(frozen=True)
class ToyVocabulary:
    """A character tokenizer and the special ids an encoder–decoder needs, placed after the characters.

    Ids ``0 … n_chars-1`` are characters (``0`` is ``<unk>``), then ``pad_id``, ``bos_id`` (the decoder's start
    token), ``eos_id`` (ends every target, as in T5), ``mask_id``; the last ``len(sentinel_ids)`` ids are T5's
    sentinels (:func:`t5_sentinel_ids`).
    """

    tokenizer: CharTokenizer
    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int
    sentinel_ids: tuple[int, ...]

    @property
    def n_chars(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def size(self) -> int:
        """Rows of the model's embedding: characters + pad, start, end, mask + sentinels."""
        return self.n_chars + 4 + len(self.sentinel_ids)


def toy_vocabulary(text: str, n_sentinels: int = 8) -> ToyVocabulary:
    """The characters of ``text`` (+ ``<unk>``), then pad, start, end, mask and ``n_sentinels`` sentinel ids."""
    check_int("n_sentinels", n_sentinels, minimum=1)
    tokenizer = CharTokenizer.train(text)
    w = tokenizer.vocab_size
    size = w + 4 + n_sentinels
    return ToyVocabulary(tokenizer, w, w + 1, w + 2, w + 3, tuple(t5_sentinel_ids(size, n_sentinels)))


WORD = re.compile(r"[A-Za-z]{3,12}")
"""The words the downstream tasks ask for: runs of 3 to 12 ASCII letters."""
TASKS = ("next", "fill")
BLANK = "___"


def word_task_examples(
    text: str, n: int, context: int = 32, generator: torch.Generator | None = None
) -> list[tuple[str, str, str]]:
    """Two text-to-text tasks about the words of ``text``, T5-style with a task prefix: ``(task, input, target)``.

    ``n`` word occurrences (:data:`WORD`, whole words with at least ``context`` characters on each side) are drawn
    at random; each becomes, at random, one of

    * ``"next"`` — "what is the next word?": ``next: <the context characters before the word>`` → the word;
    * ``"fill"`` — "which word is missing?": ``fill: <context/2 before> ___ <context/2 after>`` → the word.

    Both need the language's vocabulary and its use in context, nothing else. Each pre-training objective is
    closer to one of them (a prefix LM continues text; BERT-style denoising fills gaps; deshuffling does neither),
    which is why the comparison reports both and their mean, as T5 reports several downstream tasks.
    """
    check_int("n", n, minimum=1)
    check_int("context", context, minimum=2)

    def inside_a_word(c: str) -> bool:
        return c.isalnum() or c == "_"

    spans = [m.span() for m in WORD.finditer(text) if m.start() >= context and m.end() + context <= len(text)
             and not inside_a_word(text[m.start() - 1]) and not inside_a_word(text[m.end()])]
    if not spans:
        raise ValueError(f"no word of 3-12 letters with {context} characters on each side in the text")
    picks = torch.randint(len(spans), (n,), generator=generator).tolist()
    kinds = torch.randint(len(TASKS), (n,), generator=generator).tolist()
    examples = []
    for (a, b), kind in zip((spans[i] for i in picks), kinds, strict=True):
        if TASKS[kind] == "next":
            source = text[a - context : a]
        else:
            source = text[a - context // 2 : a] + BLANK + text[b : b + context - context // 2]
        examples.append((TASKS[kind], f"{TASKS[kind]}: {source}", text[a:b]))
    return examples


@dataclass(frozen=True)
class ComparisonConfig:
    """Sizes of :func:`compare_objectives` (the defaults run in seconds on one CPU thread)."""

    objectives: tuple[str, ...] = ("bert_style", "prefix_lm", "deshuffling")  # T5's Table 4 (+ "iid_replace_spans")
    seeds: tuple[int, ...] = (0, 1, 2)  # one initialisation, task sample and batch order per seed
    window: int = 24  # characters per pre-training window
    d_model: int = 32  # the encoder–decoder: n_layers encoder + n_layers decoder blocks
    n_layers: int = 1
    n_heads: int = 4
    d_ff: int = 64
    batch_size: int = 16  # windows per pre-training step, examples per fine-tuning step
    pretrain_steps: int = 80
    pretrain_lr: float = 1e-2  # peak of the warm-up + cosine schedule
    finetune_steps: int = 50
    finetune_lr: float = 3e-3
    context: int = 24  # characters around the word of a downstream example
    n_finetune: int = 1024  # fine-tuning examples (first half of the held-out text)
    n_test: int = 512  # test examples (second half)
    corruption_rate: float = 0.15  # BERT-style / replace-spans noise

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in T5_OBJECTIVES]
        if unknown or not self.objectives:
            raise ValueError(f"objectives must be a non-empty subset of {T5_OBJECTIVES}, got {self.objectives}")
        if not self.seeds:
            raise ValueError("need at least one seed")
        for name in ("window", "batch_size", "pretrain_steps", "finetune_steps", "context", "n_finetune", "n_test"):
            check_int(name, getattr(self, name), minimum=2 if name == "window" else 1)


@dataclass
class ObjectiveRun:
    """One (objective, seed) cell: the pre-training loss (comparable only within its objective) and, per downstream
    task and their ``"mean"``, the held-out loss (nats per target token) and token accuracy (comparable across
    objectives)."""

    objective: str
    seed: int
    pretrain_loss: float  # mean of the last 10% of steps; nan for the baseline
    target_tokens: int  # decoder target tokens seen in pre-training
    downstream_loss: dict[str, float]
    accuracy: dict[str, float]
    parameters: int  # of the encoder–decoder (the same for every cell)


def seq2seq_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], vocab: ToyVocabulary
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``(input, target)`` id pairs into ``(input_ids, attention_mask, decoder_input_ids, labels)``.

    Every target ends with ``eos_id`` (T5 appends its EOS too: the model must learn where an answer stops); the
    decoder reads ``bos_id`` and the target shifted right by one (teacher forcing) and predicts the target; padded
    label positions are :data:`~lmkit.training.objectives.IGNORE_INDEX`.
    """
    src, src_mask = pad_batch([list(map(int, x)) for x, _ in pairs], vocab.pad_id)
    tgt, tgt_mask = pad_batch([[*map(int, y), vocab.eos_id] for _, y in pairs], vocab.pad_id)
    decoder_input_ids = torch.cat([torch.full((len(pairs), 1), vocab.bos_id), tgt[:, :-1]], dim=1)
    return src, src_mask, decoder_input_ids, tgt.masked_fill(~tgt_mask, IGNORE_INDEX)


def seq2seq_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean cross-entropy of the decoder's predictions over the non-padded target tokens of a :func:`seq2seq_batch`."""
    src, src_mask, decoder_input_ids, labels = (t.to(next(model.parameters()).device) for t in batch)
    mask = None if bool(src_mask.all()) else src_mask  # no padding: skip building the mask (same result)
    logits = model(src, decoder_input_ids, attention_mask=mask).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def _train(model: nn.Module, get_batch, steps: int, lr: float, seed: int) -> list[dict[str, float]]:
    config = TrainConfig(max_steps=steps, lr=lr, warmup_steps=max(1, steps // 10), seed=seed, progress=False)
    return Trainer(model, seq2seq_loss, get_batch, config).train()


def pretrain(
    model: nn.Module, objective: str, ids: torch.Tensor, vocab: ToyVocabulary, config: ComparisonConfig, seed: int
) -> tuple[float, int]:
    """Pre-train ``model`` in place on windows of ``ids`` with one objective; ``(final loss, target tokens seen)``.

    The windows of step ``s`` depend only on ``(seed, s)``, so every objective sees the same text in the same
    order; only the corruption (drawn from the trainer's generator) differs.
    """
    if len(ids) <= config.window:
        raise ValueError(f"the training ids ({len(ids)}) must be longer than the window ({config.window})")
    seen = [0]

    def get_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        windows = torch.Generator().manual_seed(1_000_003 * seed + step)
        starts = torch.randint(len(ids) - config.window + 1, (config.batch_size,), generator=windows).tolist()
        pairs = [objective_pair(ids[s : s + config.window], objective, vocab.mask_id, vocab.n_chars,
                                vocab.sentinel_ids, config.corruption_rate, generator) for s in starts]
        seen[0] += sum(len(t) + 1 for _, t in pairs)  # + EOS
        return seq2seq_batch(pairs, vocab)

    history = _train(model, get_batch, config.pretrain_steps, config.pretrain_lr, seed)
    tail = history[-max(1, len(history) // 10) :]
    return sum(r["loss"] for r in tail) / len(tail), seen[0]


def encode_examples(examples: Sequence[tuple[str, str, str]], vocab: ToyVocabulary) -> list[tuple[list[int], ...]]:
    """``(task, input, target)`` strings → ``(input ids, target ids)`` pairs."""
    encode = vocab.tokenizer.encode
    return [(encode(source), encode(target)) for _, source, target in examples]


def evaluate_tasks(
    model: EncoderDecoder, examples: Sequence[tuple[str, str, str]], vocab: ToyVocabulary
) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out loss (nats per target token, EOS included) and token accuracy per task, and their means.

    Both come from one teacher-forced pass: the accuracy is the share of target tokens (the word's letters and the
    EOS) that are the argmax given the right prefix — a greedy decoder reproduces a whole word exactly if and only if
    all of its tokens are.
    """
    device = next(model.parameters()).device
    src, src_mask, dec, labels = (t.to(device) for t in seq2seq_batch(encode_examples(examples, vocab), vocab))
    with eval_mode(model), torch.no_grad():
        logits = model(src, dec, attention_mask=src_mask).logits.float()  # (n, T, V)
    real = labels != IGNORE_INDEX
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")  # (n, T)
    right = logits.argmax(-1) == labels
    tasks = [t for t, _, _ in examples]
    loss, match = {}, {}
    for task in dict.fromkeys(tasks):
        rows = torch.tensor([t == task for t in tasks], device=device)
        loss[task] = (nll[rows].sum() / real[rows].sum()).item()
        match[task] = (right[rows].sum() / real[rows].sum()).item()
    loss["mean"] = sum(loss.values()) / len(loss)
    match["mean"] = sum(match.values()) / len(match)
    return loss, match


def finetune(
    model: nn.Module, examples: Sequence[tuple[str, str, str]], vocab: ToyVocabulary, config: ComparisonConfig,
    seed: int,
) -> None:
    """Fine-tune ``model`` in place on a mixture of the downstream tasks (batches drawn from ``examples``)."""
    pairs = encode_examples(examples, vocab)

    def get_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        rows = torch.randint(len(pairs), (config.batch_size,), generator=generator).tolist()
        return seq2seq_batch([pairs[i] for i in rows], vocab)

    _train(model, get_batch, config.finetune_steps, config.finetune_lr, seed)


def compare_objectives(
    train_text: str, held_out_text: str, config: ComparisonConfig | None = None, device: str | torch.device = "cpu"
) -> list[ObjectiveRun]:
    """Run T5's objective comparison at toy scale; one :class:`ObjectiveRun` per (objective or baseline, seed).

    Both texts are read with runs of whitespace collapsed to one space (the code examples' indentation would
    otherwise fill the windows). Pre-training reads ``train_text``; the downstream tasks
    (:func:`word_task_examples`) are built from ``held_out_text``: its first half gives the ``n_finetune``
    fine-tuning examples, its second half the ``n_test`` test examples, so fine-tuning and test text never overlap
    and no model was pre-trained on either. For each seed all models start from the same initialisation and
    fine-tune on the same batches. Deterministic given the seeds (on one device).
    """
    config = config or ComparisonConfig()
    train_text, held_out_text = " ".join(train_text.split()), " ".join(held_out_text.split())
    vocab = toy_vocabulary(train_text, n_sentinels=span_counts(config.window, config.corruption_rate, 1.0)[0])
    train_ids = torch.tensor(vocab.tokenizer.encode(train_text))
    half = len(held_out_text) // 2
    model_config = TransformerConfig(
        vocab_size=vocab.size, d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
        d_ff=config.d_ff, max_positions=max(config.window, config.context + 16),
    )
    runs = []
    for seed in config.seeds:
        task = torch.Generator().manual_seed(seed)
        finetune_set = word_task_examples(held_out_text[:half], config.n_finetune, config.context, task)
        test_set = word_task_examples(held_out_text[half:], config.n_test, config.context, task)
        torch.manual_seed(seed)
        init = EncoderDecoder(model_config).to(device)
        n_parameters = sum(p.numel() for p in init.parameters())
        for objective in (NO_PRETRAINING, *config.objectives):
            model = copy.deepcopy(init)
            pretrain_loss, seen = math.nan, 0
            if objective != NO_PRETRAINING:
                pretrain_loss, seen = pretrain(model, objective, train_ids, vocab, config, seed)
            finetune(model, finetune_set, vocab, config, seed)
            loss, match = evaluate_tasks(model, test_set, vocab)
            runs.append(ObjectiveRun(objective, seed, pretrain_loss, seen, loss, match, n_parameters))
    return runs


def summarize(runs: Sequence[ObjectiveRun]) -> dict[str, dict[str, float]]:
    """Per objective (in order of appearance): mean and sample standard deviation over seeds of each task's
    downstream loss and token accuracy (keys ``"loss_<task>"``, ``"loss_<task>_std"``, ``"accuracy_<task>"``, …), the
    mean pre-training loss and target tokens, and the number of seeds."""
    out: dict[str, dict[str, float]] = {}
    for objective in dict.fromkeys(r.objective for r in runs):
        rows = [r for r in runs if r.objective == objective]
        summary = {"seeds": len(rows), "pretrain_loss": sum(r.pretrain_loss for r in rows) / len(rows),
                   "target_tokens": sum(r.target_tokens for r in rows) / len(rows)}
        for name, field_ in (("loss", "downstream_loss"), ("accuracy", "accuracy")):
            for task in getattr(rows[0], field_):
                values = torch.tensor([getattr(r, field_)[task] for r in rows], dtype=torch.float64)
                summary[f"{name}_{task}"] = values.mean().item()
                summary[f"{name}_{task}_std"] = values.std().item() if len(rows) > 1 else 0.0
        out[objective] = summary
    return out
