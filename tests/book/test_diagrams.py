"""The chapters' code-drawn diagrams: each draws, and the GGUF byte layouts agree with ggml's block sizes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmkit.book import diagrams  # noqa: E402
from lmkit.quant import ggml  # noqa: E402

QUANT_TYPES = [name for name, (_, per_block, _) in ggml.TYPES.items() if per_block > 1]


@pytest.mark.parametrize("qtype", QUANT_TYPES)
def test_gguf_fields_add_up_to_the_real_block_size(qtype):
    fields = diagrams.gguf_fields(qtype)
    assert sum(size for _, size in fields) == ggml.TYPES[qtype][2]
    # and to the decoder's own bits per weight
    assert 8 * sum(size for _, size in fields) / ggml.TYPES[qtype][1] == ggml.bits_per_weight(qtype)


def test_gguf_fields_reject_an_unknown_type():
    with pytest.raises(ValueError, match="no byte layout"):
        diagrams.gguf_fields("F16")


@pytest.mark.parametrize("draw", [
    diagrams.transformer_block,
    lambda: diagrams.attention_flows(6, 3),
    lambda: diagrams.kv_cache_growth(4, 2),
    lambda: diagrams.gguf_block("Q4_0", "Q8_0"),
    lambda: diagrams.gguf_block("Q4_K", "Q6_K"),
    lambda: diagrams.gptq_column_order(torch.rand(12, generator=torch.Generator().manual_seed(0)), 4),
], ids=["block", "flows", "kv_cache", "gguf32", "kquants", "gptq"])
def test_diagram_draws(draw):
    fig = draw()
    assert fig.axes
    plt.close(fig)


def test_gptq_order_is_act_order():
    h = torch.tensor([1.0, 5.0, 3.0, 4.0])
    fig = diagrams.gptq_column_order(h, block_size=2)
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert labels == ["1", "3", "2", "0"]  # largest H_ii first, as gptq_quantize(act_order=True) processes them
    plt.close(fig)
