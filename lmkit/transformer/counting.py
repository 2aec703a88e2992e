"""Parameter counts and FLOPs per token of the published models, computed from their configurations.

A paper reports "110M parameters"; this module derives the number from the architecture the paper describes, so a
reader can see where the parameters sit (the embedding table of BERT-base holds a fifth of them; the FFN of GPT-3 175B
two thirds) and check the reported totals. The configurations (:data:`PUBLISHED`) are the papers' own tables:

* GPT-1 (Radford et al., 2018, Section 4.1), GPT-2 (Radford et al., 2019, Table 2 and Section 2.3), the GPT-3 family
  (Brown et al., 2020, Table 2.1; ``d_ff = 4 d_model``, context 2048);
* BERT base/large (Devlin et al., 2019, Section 3), RoBERTa base/large (Liu et al., 2019: BERT's architectures with a
  50K byte-level BPE vocabulary);
* T5 Small … 11B (Raffel et al., 2020, Sections 3.1.1 and 3.7).

Vocabulary sizes are those of the released checkpoints (GPT-1's 40,000 BPE merges give 40,478 tokens, BERT's
"30,000" WordPiece vocabulary has 30,522, T5's 32,000 has 32,128 rows, RoBERTa's "50K" 50,265).

Worked example — GPT-2 small, whose paper reports 117M::

    >>> parameter_count(PUBLISHED["gpt2-small"])["total"]
    124439808

The counts follow the modules of Hugging Face ``transformers`` one for one (``GPT2LMHeadModel``, ``BertModel`` and
``BertForPreTraining``, ``RobertaModel``, ``T5ForConditionalGeneration``), which the tests instantiate on the meta
device: biases, LayerNorm gains and shifts, BERT's pooler, T5's relative-position buckets. A **tied** output layer
(GPT, T5 v1.0, BERT's MLM decoder) reuses the token embedding and adds no parameters — only BERT's output bias is new.

FLOPs per token come from :func:`lmkit.efficient.cost.transformer_forward_flops` (matmuls only, 2 per multiply-add),
averaged over a full context; :func:`training_flops` is the usual "forward + backward = 3 × forward". Left out:
dropout, softmax, norms and activations (``O(N d)`` each, negligible next to the matmuls), and GPT-3's sparse
attention layers (they skip some score entries but have the same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmkit.efficient.cost import attention_flops, transformer_forward_flops

Family = Literal["gpt", "bert", "t5"]


@dataclass(frozen=True)
class PublishedConfig:
    """The architecture of a published model, as its paper states it.

    ``n_layers`` is per stack for T5 (encoder and decoder have as many each). ``head_dim`` defaults to
    ``d_model // n_heads``. ``n_positions`` is the number of rows of a learned position table (RoBERTa's 514 = 512
    plus its padding offset); T5 has none (``relative_buckets`` of relative-position bias per head instead).
    """

    name: str
    family: Family
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    vocab_size: int
    n_ctx: int
    source: str
    reported_params: float | None = None
    head_dim: int | None = None
    n_positions: int | None = None
    n_token_types: int = 0
    final_norm: bool = True  # pre-norm GPT-2/3 normalise the last state; post-norm GPT-1 and BERT do not
    relative_buckets: int = 0
    batch_tokens: float | None = None
    learning_rate: float | None = None
    note: str = ""

    @property
    def dim_per_head(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def d_attn(self) -> int:
        """Width of the concatenated heads, ``n_heads · head_dim`` (``d_model`` except for GPT-3 13B's table row)."""
        return self.n_heads * self.dim_per_head

    @property
    def positions(self) -> int:
        return self.n_ctx if self.n_positions is None else self.n_positions


def _gpt3(name: str, reported: float, n_layers: int, d_model: int, n_heads: int, d_head: int, batch: float, lr: float,
          note: str = "") -> PublishedConfig:
    return PublishedConfig(
        name, "gpt", n_layers, d_model, n_heads, 4 * d_model, 50257, 2048, "GPT-3 paper, Table 2.1", reported,
        head_dim=d_head, batch_tokens=batch, learning_rate=lr, note=note,
    )


def _t5(name: str, reported: float, n_layers: int, d_model: int, n_heads: int, d_ff: int, d_kv: int) -> PublishedConfig:
    return PublishedConfig(
        name, "t5", n_layers, d_model, n_heads, d_ff, 32128, 512, "T5 paper, Sections 3.1.1 and 3.7", reported,
        head_dim=d_kv, relative_buckets=32,
    )


_ALL = [
    PublishedConfig("gpt1", "gpt", 12, 768, 12, 3072, 40478, 512, "GPT-1 paper, Section 4.1", None, final_norm=False,
                    note="post-norm; the paper reports no parameter count"),
    PublishedConfig("gpt2-small", "gpt", 12, 768, 12, 3072, 50257, 1024, "GPT-2 paper, Table 2", 117e6),
    PublishedConfig("gpt2-medium", "gpt", 24, 1024, 16, 4096, 50257, 1024, "GPT-2 paper, Table 2", 345e6),
    PublishedConfig("gpt2-large", "gpt", 36, 1280, 20, 5120, 50257, 1024, "GPT-2 paper, Table 2", 762e6),
    PublishedConfig("gpt2-xl", "gpt", 48, 1600, 25, 6400, 50257, 1024, "GPT-2 paper, Table 2", 1542e6),
    _gpt3("gpt3-small", 125e6, 12, 768, 12, 64, 0.5e6, 6.0e-4),
    _gpt3("gpt3-medium", 350e6, 24, 1024, 16, 64, 0.5e6, 3.0e-4),
    _gpt3("gpt3-large", 760e6, 24, 1536, 16, 96, 0.5e6, 2.5e-4),
    _gpt3("gpt3-xl", 1.3e9, 24, 2048, 24, 128, 1e6, 2.0e-4,
          note="24 heads x 128 = 3072 is not d_model 2048: as printed 1.52B; 1.3B needs 16 heads of 128"),
    _gpt3("gpt3-2.7b", 2.7e9, 32, 2560, 32, 80, 1e6, 1.6e-4),
    _gpt3("gpt3-6.7b", 6.7e9, 32, 4096, 32, 128, 2e6, 1.2e-4),
    _gpt3("gpt3-13b", 13.0e9, 40, 5140, 40, 128, 2e6, 1.0e-4,
          note="the table's d_model 5140 is not n_heads x d_head = 5120; counted as printed"),
    _gpt3("gpt3-175b", 175.0e9, 96, 12288, 96, 128, 3.2e6, 0.6e-4),
    PublishedConfig("bert-base", "bert", 12, 768, 12, 3072, 30522, 512, "BERT paper, Section 3", 110e6,
                    n_token_types=2, final_norm=False),
    PublishedConfig("bert-large", "bert", 24, 1024, 16, 4096, 30522, 512, "BERT paper, Section 3", 340e6,
                    n_token_types=2, final_norm=False),
    PublishedConfig("roberta-base", "bert", 12, 768, 12, 3072, 50265, 512, "RoBERTa paper, Sections 4.1 and 5", 125e6,
                    n_positions=514, n_token_types=1, final_norm=False),
    PublishedConfig("roberta-large", "bert", 24, 1024, 16, 4096, 50265, 512, "RoBERTa paper, Sections 4.1 and 5",
                    355e6, n_positions=514, n_token_types=1, final_norm=False),
    _t5("t5-small", 60e6, 6, 512, 8, 2048, 64),
    _t5("t5-base", 220e6, 12, 768, 12, 3072, 64),
    _t5("t5-large", 770e6, 24, 1024, 16, 4096, 64),
    _t5("t5-3b", 2.8e9, 24, 1024, 32, 16384, 128),
    _t5("t5-11b", 11e9, 24, 1024, 128, 65536, 128),
]
PUBLISHED: dict[str, PublishedConfig] = {c.name: c for c in _ALL}
"""Every published configuration of the module docstring, by name (``"gpt2-small"``, ``"gpt3-175b"``, ``"t5-11b"``…)."""

GPT3_FAMILY = [c.name for c in _ALL if c.name.startswith("gpt3")]


def _layer_norm(d: int, family: Family) -> int:
    return d if family == "t5" else 2 * d  # T5's norm has a gain only (no shift), like RMSNorm


def parameter_count(cfg: PublishedConfig) -> dict[str, int]:
    """Parameters of ``cfg`` by part: ``embeddings`` (tokens, positions, segments), ``attention``, ``ffn``,
    ``norms``, ``other`` (BERT's pooler, T5's relative-position bias), and ``total`` / ``non_embedding``.

    Per layer, with ``d = d_model``, ``a = n_heads · head_dim``, ``f = d_ff``:

    * GPT/BERT attention ``4 d a + 3 a + d`` (Q, K, V, output projections with biases), FFN ``2 d f + f + d``,
      two LayerNorms ``4 d``;
    * T5 (no biases, gain-only norms) encoder layer ``4 d a + 2 d f + 2 d``; decoder layer adds cross-attention:
      ``8 d a + 2 d f + 3 d``; one ``relative_buckets × n_heads`` bias table in the first layer of each stack.

    Tied output layers add nothing (see the module docstring).
    """
    d, a, f, L, fam = cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_layers, cfg.family
    norm = _layer_norm(d, fam)
    parts = {"embeddings": cfg.vocab_size * d}
    if fam == "t5":
        parts["attention"] = L * 4 * d * a + L * 8 * d * a  # encoder self; decoder self + cross
        parts["ffn"] = 2 * L * 2 * d * f
        parts["norms"] = L * 2 * norm + L * 3 * norm + 2 * norm  # + final norm of each stack
        parts["other"] = 2 * cfg.relative_buckets * cfg.n_heads
    else:
        parts["embeddings"] += cfg.positions * d + cfg.n_token_types * d
        parts["attention"] = L * (4 * d * a + 3 * a + d)
        parts["ffn"] = L * (2 * d * f + f + d)
        parts["norms"] = L * 2 * norm + (norm if cfg.final_norm else 0) + (norm if fam == "bert" else 0)
        parts["other"] = d * d + d if fam == "bert" else 0  # BERT's pooler: tanh(W h_[CLS] + b)
    parts["total"] = sum(parts.values())
    parts["non_embedding"] = parts["total"] - parts["embeddings"]
    return parts


def bert_pretraining_heads(cfg: PublishedConfig) -> dict[str, int]:
    """Parameters of BERT's pre-training heads (``BertForPreTraining``): the MLM transform (dense + LayerNorm), the
    output bias over the vocabulary (the output matrix is the tied token embedding), and the 2-way NSP classifier on
    the pooled ``[CLS]`` state."""
    if cfg.family != "bert":
        raise ValueError(f"{cfg.name} is not a BERT-family model")
    d = cfg.d_model
    return {"mlm": d * d + d + 2 * d + cfg.vocab_size, "nsp": 2 * d + 2}


def forward_flops_per_token(cfg: PublishedConfig, context: int | None = None) -> dict[str, float]:
    """Forward FLOPs per token at ``context`` tokens (default: the model's ``n_ctx``), by part.

    GPT and BERT: :func:`lmkit.efficient.cost.transformer_forward_flops` over one full context, divided by its length
    (GPT includes the tied LM head; BERT's encoder is counted without the MLM head). T5: an input and a target of
    ``context`` tokens each (:func:`encoder_decoder_forward_flops`), per token of the two.
    """
    n = cfg.n_ctx if context is None else context
    if cfg.family == "t5":
        parts = encoder_decoder_forward_flops(cfg, n, n)
        return {k: v / (2 * n) for k, v in parts.items()}
    vocab = cfg.vocab_size if cfg.family == "gpt" else 0
    parts = transformer_forward_flops(cfg.n_layers, cfg.d_model, cfg.n_heads, n, cfg.d_ff, vocab,
                                      head_dim=cfg.dim_per_head)
    return {k: v / n for k, v in parts.items()}


def encoder_decoder_forward_flops(cfg: PublishedConfig, n_in: int, n_out: int) -> dict[str, int]:
    """Forward FLOPs of an encoder–decoder on an input of ``n_in`` and a target of ``n_out`` tokens.

    ``encoder``: every input token through ``L`` encoder layers; ``decoder``: every target token through ``L``
    decoder layers' self-attention and FFN plus the tied LM head; ``cross``: the cross-attention (queries and output
    projection on the targets, keys and values on the encoder output, scores ``n_out × n_in``). Without ``cross``,
    this is a decoder-only model of ``L`` layers run on the ``n_in + n_out`` tokens split in two — the T5 paper's
    point that an ``L + L`` encoder–decoder has twice the parameters but about the cost of an ``L``-layer decoder.
    """
    d, a, L = cfg.d_model, cfg.d_attn, cfg.n_layers
    args = dict(n_layer=L, d_model=d, n_heads=cfg.n_heads, d_ff=cfg.d_ff, head_dim=cfg.dim_per_head)
    encoder = transformer_forward_flops(seq_len=n_in, **args)["total"]
    decoder = transformer_forward_flops(seq_len=n_out, vocab_size=cfg.vocab_size, **args)["total"]
    projections = 2 * n_out * d * a * 2 + 2 * n_in * d * a * 2  # Q, O on the targets; K, V on the encoder output
    cross = L * (projections + cfg.n_heads * attention_flops(n_out, n_in, cfg.dim_per_head))
    return {"encoder": encoder, "decoder": decoder, "cross": cross, "total": encoder + decoder + cross}


def training_flops(cfg: PublishedConfig, tokens: float, context: int | None = None) -> float:
    """FLOPs to train on ``tokens`` tokens: forward + backward ≈ 3 × forward (the backward pass computes gradients
    for both the inputs and the weights of each matmul). With attention neglected this is Kaplan et al.'s
    ``6 N D``."""
    return 3.0 * forward_flops_per_token(cfg, context)["total"] * tokens
