"""The cost accountant against hand-computed cases, the FlashAttention paper's formulas and numbers,
torch's ``FlopCounterMode`` on HF transformers models, the size of HF's own KV cache, and the memory
tracker against hand-counted allocations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmkit.efficient.cost import (
    TensorMemoryTracker,
    attention_flops,
    flash_attention_io,
    kv_cache_bytes,
    naive_attention_io,
    paper_block_sizes,
    transformer_forward_flops,
)
from lmkit.efficient.flash import flash_attention, naive_attention


def test_naive_io_hand_computed():
    # N=4, d=2. Reads: Q,K (8+8), S (16), P (16), V (8) = 56. Writes: S (16), P (16), O (8) = 40.
    io = naive_attention_io(4, 2, bytes_per_element=2)
    assert (io.reads, io.writes, io.bytes) == (56, 40, 192)
    n, d = 1024, 64
    assert naive_attention_io(n, d).accesses == 4 * n * d + 4 * n * n  # Θ(Nd + N²)


def test_flash_io_hand_computed():
    # N=4, d=2, 2×2 blocks. FA2: Q once (8), K and V per tile: 4 tiles × 2 × 2 rows × d = 32; write O (8) + lse (4).
    io = flash_attention_io(4, 2, 2, 2, loop="fa2")
    assert (io.reads, io.writes) == (40, 12)
    # causal: 3 of the 4 tiles are visited -> K, V reads 24
    assert flash_attention_io(4, 2, 2, 2, is_causal=True).reads == 8 + 24
    # FA1 (Algorithm 1): K, V once (16); per tile read Q_i, O_i (2·2·2) and l_i, m_i (2·2) = 12, ×4 = 48.
    # writes: initialise O, l, m (8 + 8) and per tile O_i, l_i, m_i (4 + 4) ×4 = 32.
    io = flash_attention_io(4, 2, 2, 2, loop="fa1")
    assert (io.reads, io.writes) == (64, 48)


def test_flash_io_follows_theorem_2():
    """Theorem 2: Θ(N² d² / M) accesses with the paper's block sizes, for d <= M <= N d."""
    d = 64
    ratios = []
    for n in (1024, 2048, 4096):
        for sram in (2**14, 2**15, 2**16):  # 16K–64K elements (32–128 KB in fp16)
            block_r, block_c = paper_block_sizes(d, sram)
            io = flash_attention_io(n, d, block_r, block_c, loop="fa1")
            ratios.append(io.accesses / (n * n * d * d / sram))
    assert max(ratios) / min(ratios) < 1.3  # the same constant across a 4× range of N and of M
    # the paper's proof: K and V are read once, Q and O once per key block (T_c passes)
    n, (block_r, block_c) = 2048, paper_block_sizes(d, 2**15)
    t_c = math.ceil(n / block_c)
    io = flash_attention_io(n, d, block_r, block_c, loop="fa1")
    assert io.reads == 2 * n * d + t_c * n * (2 * d + 2)


def test_flash_reads_far_less_than_naive_for_long_sequences():
    d, sram = 64, 100 * 1024 // 2  # A100: ~100 KB of SRAM per SM in fp16 elements
    block_r, block_c = paper_block_sizes(d, sram)
    assert (block_r, block_c) == (64, 200)
    naive = naive_attention_io(4096, d)
    assert naive.bytes / flash_attention_io(4096, d, block_r, block_c, loop="fa1").bytes > 3.5
    # FlashAttention-2 gives the big block to the queries (its outer loop): K and V are re-read N / B_r times
    assert naive.bytes / flash_attention_io(4096, d, block_c, block_r, loop="fa2").bytes > 5.5
    # a bigger SRAM means bigger blocks and fewer passes: traffic ∝ 1/M (Theorem 2)
    small, big = (flash_attention_io(4096, d, *paper_block_sizes(d, m), loop="fa1").bytes for m in (2**15, 2**17))
    assert 3 < small / big < 4.5
    # with blocks of 1 the "tiled" algorithm re-reads K and V for every query: worse than naive
    assert flash_attention_io(1024, 64, 1, 1).bytes > naive_attention_io(1024, 64).bytes


def test_flops_ratio_matches_flashattention_figure_2():
    """Fig. 2 of the paper (GPT-2 medium attention, fwd + bwd): 66.6 GFLOPs standard vs 75.2 FlashAttention."""
    n, d = 1024, 64
    standard = attention_flops(n, n, d) + attention_flops(n, n, d, pass_="backward")
    flash = attention_flops(n, n, d) + attention_flops(n, n, d, pass_="backward", recompute=True)
    assert flash / standard == pytest.approx(14 / 12)
    assert flash / standard == pytest.approx(75.2 / 66.6, rel=0.05)  # the paper also counts softmax/dropout


def _count(model, ids):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(ids, use_cache=True)
    return counter.get_total_flops(), out


def test_forward_flops_match_flop_counter_on_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=50, bos_token_id=0, eos_token_id=0,
                     attn_implementation="eager")
    ids = torch.randint(0, 50, (2, 17))
    total, _ = _count(GPT2LMHeadModel(cfg).eval(), ids)
    assert total == transformer_forward_flops(2, 32, 4, 17, d_ff=128, vocab_size=50, batch=2)["total"]


def test_forward_flops_and_kv_cache_match_hf_llama_with_gqa():
    torch.manual_seed(0)
    cfg = LlamaConfig(num_hidden_layers=3, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                      intermediate_size=80, vocab_size=64, attn_implementation="eager")
    ids = torch.randint(0, 64, (2, 21))
    total, out = _count(LlamaForCausalLM(cfg).eval(), ids)
    expected = transformer_forward_flops(3, 48, 6, 21, d_ff=80, vocab_size=64, n_kv_heads=2, gated_ffn=True, batch=2)
    assert total == expected["total"]
    cache = out.past_key_values
    held = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == kv_cache_bytes(3, 2, 8, seq_len=21, batch=2, bytes_per_element=4)


def test_notes_complexity_terms():
    """The notes' O(N²d + Nd²): doubling N doubles the projection part and quadruples the attention part."""
    a = transformer_forward_flops(1, 256, 4, 512, d_ff=1024)
    b = transformer_forward_flops(1, 256, 4, 1024, d_ff=1024)
    assert b["scores"] == 4 * a["scores"] and b["ffn"] == 2 * a["ffn"]
    assert a["scores"] == 2 * 512**2 * 256  # 2 N² d with d = H · head_dim


def test_kv_cache_smollm2_by_hand():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 → 2·30·3·64·2 bytes = 23,040 B per token in fp16
    assert kv_cache_bytes(30, 3, 64) == 23_040
    assert kv_cache_bytes(30, 3, 64, seq_len=8192) == 188_743_680  # full 8K context, one sequence


def test_bad_inputs():
    with pytest.raises(ValueError):
        naive_attention_io(0, 4)
    with pytest.raises(ValueError, match=r"^loop must be one of \('fa1', 'fa2'\), got 'fa3'$"):
        flash_attention_io(8, 4, 2, 2, loop="fa3")
    with pytest.raises(ValueError, match=r"^pass_ must be one of \('forward', 'backward'\), got 'both'$"):
        attention_flops(4, 4, 2, pass_="both")
    with pytest.raises(ValueError, match="head_dim"):
        transformer_forward_flops(1, 10, 3, 4, 8)
    with pytest.raises(ValueError):
        kv_cache_bytes(1, 1, 1, seq_len=-1)


def test_memory_tracker_hand_counted():
    x, y = torch.randn(300, 40), torch.randn(40, 300)
    with TensorMemoryTracker() as mem:
        a = x @ y  # 300×300 float32 = 360,000 bytes
        b = a.softmax(-1)  # another 360,000 while a is alive
        del a
        c = b[:10]  # a view: no new memory
        del b, c
    assert mem.peak == 2 * 300 * 300 * 4
    assert mem.current == 0


def test_measured_peak_memory_quadratic_vs_linear():
    """The issue's claim, measured: naive attention's peak grows like N², the tiled one's like N."""
    peaks = {"naive": [], "tiled": []}
    for n in (256, 512, 1024):
        q, k, v = (torch.randn(1, 2, n, 32) for _ in range(3))
        for name, fn in (("naive", naive_attention), ("tiled", flash_attention)):
            with TensorMemoryTracker() as mem:
                fn(q, k, v, is_causal=True)
            peaks[name].append(mem.peak)
    naive, tiled = peaks["naive"], peaks["tiled"]
    assert naive[2] / naive[1] == pytest.approx(4, rel=0.05)  # quadratic
    assert (tiled[2] - tiled[1]) / (tiled[1] - tiled[0]) == pytest.approx(2, rel=0.1)  # linear increments
    assert naive[2] > 10 * tiled[2]
