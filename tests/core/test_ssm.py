"""lmkit.ssm against references nobody here wrote: HF transformers' MambaForCausalLM (its PyTorch path), exact
identities of discretisation (the Van Loan block exponential, the closed form), and the scans against the loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lmkit.decoding.generate import generate
from lmkit.ssm.compare import mixer_costs, state_bytes
from lmkit.ssm.discretize import zoh, zoh_matrix, zoh_simplified
from lmkit.ssm.mamba import MambaCache, MambaConfig, MambaLM
from lmkit.ssm.scan import (
    causal_conv,
    linear_scan,
    lti_kernel,
    scan_associative,
    scan_chunked,
    scan_sequential,
    selective_scan,
)

transformers = pytest.importorskip("transformers")


def _hf_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
               use_bias=False, use_conv_bias=True, time_step_rank=4)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():  # HF initialises D = 1 and the biases to 0: randomise them so a dropped term shows
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "conv1d.bias", "in_proj.bias", "out_proj.bias", "norm.weight")):
                p.add_(0.3 * torch.randn_like(p))
    return model


# --- discretisation -------------------------------------------------------------------------------------------

def test_zoh_matches_closed_form_and_block_exponential():
    torch.manual_seed(0)
    N, M, delta = 5, 2, 0.37
    A = torch.randn(N, N, dtype=torch.float64) - 2 * torch.eye(N, dtype=torch.float64)
    B = torch.randn(N, M, dtype=torch.float64)
    a_bar, b_bar = zoh_matrix(delta, A, B)
    dA = delta * A
    torch.testing.assert_close(a_bar, torch.linalg.matrix_exp(dA), rtol=1e-12, atol=1e-12)
    closed = torch.linalg.solve(dA, (torch.linalg.matrix_exp(dA) - torch.eye(N, dtype=A.dtype)) @ (delta * B))
    torch.testing.assert_close(b_bar, closed, rtol=1e-10, atol=1e-12)
    # the diagonal fast path equals the dense one on a diagonal A; A = 0 gives the limit B̄ = ΔB
    diag = -torch.rand(N, dtype=torch.float64) - 0.1
    diag[0] = 0.0
    a_d, b_d = zoh(torch.tensor(delta, dtype=torch.float64), diag, B[:, 0])
    a_m, b_m = zoh_matrix(delta, torch.diag(diag), B[:, :1])
    torch.testing.assert_close(a_d, torch.diagonal(a_m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b_d, b_m[:, 0], rtol=1e-12, atol=1e-12)
    assert b_d[0] == delta * B[0, 0]


def test_simplified_b_is_first_order_accurate():
    A, B = torch.tensor([-1.0, -4.0], dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
    for delta in (1e-3, 1e-2, 1e-1):
        d = torch.tensor(delta, dtype=torch.float64)
        (a_exact, b_exact), (a_simple, b_simple) = zoh(d, A, B), zoh_simplified(d, A, B)
        assert torch.equal(a_exact, a_simple)  # Ā is ZOH in both
        rel = (b_simple - b_exact) / b_exact
        torch.testing.assert_close(rel, -d * A / 2, rtol=0.1, atol=0)  # relative error ≈ |ΔA| / 2


def test_zoh_matrix_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected A"):
        zoh_matrix(0.1, torch.zeros(3, 2), torch.zeros(3, 1))


# --- scans ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("L", [1, 2, 7, 33, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_parallel_scans_equal_the_recurrence_float64(L, with_h0):
    torch.manual_seed(L)
    a = torch.rand(3, L, 4, 5, dtype=torch.float64)
    b = torch.randn(3, L, 4, 5, dtype=torch.float64)
    h0 = torch.randn(3, 4, 5, dtype=torch.float64) if with_h0 else None
    ref = scan_sequential(a, b, h0)
    # an independent check of the loop itself: h_t = Σ_s (∏_{r=s+1..t} a_r) b_s (+ ∏_{r≤t} a_r h0)
    t = L - 1
    direct = sum(torch.prod(a[:, s + 1 : t + 1], dim=1) * b[:, s] for s in range(L))
    if h0 is not None:
        direct = direct + torch.prod(a, dim=1) * h0
    torch.testing.assert_close(ref[:, -1], direct, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scan_associative(a, b, h0), ref, rtol=1e-12, atol=1e-12)
    for chunk in (None, 1, 3, 8, 100):
        torch.testing.assert_close(scan_chunked(a, b, h0, chunk), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["sequential", "associative", "chunked"])
def test_scan_backward_matches_autograd_through_the_loop(method):
    torch.manual_seed(3)
    a = torch.rand(2, 13, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 13, 3, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 13, 3, 4, dtype=torch.float64)
    ours = torch.autograd.grad((linear_scan(a, b, h0, method, chunk_size=4) * g).sum(), (a, b, h0))
    loop = torch.autograd.grad((scan_sequential(a, b, h0) * g).sum(), (a, b, h0))  # plain autograd, no custom backward
    for x, y in zip(ours, loop, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_scan_errors_are_clear():
    a = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="same"):
        scan_sequential(a, a[:, :4])
    with pytest.raises(ValueError, match="h0 must be"):
        scan_associative(a, a, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown scan method"):
        linear_scan(a, a, method="fft")
    with pytest.raises(ValueError, match="chunk_size"):
        scan_chunked(a, a, chunk_size=0)


def _selective_scan_loop(u, delta, A, B, C, D, z):
    """The reference loop of state-spaces/mamba's ``selective_scan_ref``, in its (batch, channels, length) layout."""
    u, delta, z = (t.transpose(1, 2) for t in (u, delta, z))  # (b, d, l)
    B, C = B.transpose(1, 2), C.transpose(1, 2)  # (b, n, l)
    x = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = torch.exp(delta[:, :, i, None] * A) * x + (delta[:, :, i] * u[:, :, i])[..., None] * B[:, None, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return (y * F.silu(z)).transpose(1, 2), x


@pytest.mark.parametrize("method", ["sequential", "associative", "chunked"])
def test_selective_scan_matches_reference_loop(method):
    torch.manual_seed(1)
    Bt, L, E, N = 2, 19, 6, 4
    u, z = torch.randn(Bt, L, E, dtype=torch.float64), torch.randn(Bt, L, E, dtype=torch.float64)
    delta = F.softplus(torch.randn(Bt, L, E, dtype=torch.float64))
    A = -torch.rand(E, N, dtype=torch.float64) * 3
    B, C = torch.randn(Bt, L, N, dtype=torch.float64), torch.randn(Bt, L, N, dtype=torch.float64)
    D = torch.randn(E, dtype=torch.float64)
    y, h = selective_scan(u, delta, A, B, C, D, z, method=method)
    y_ref, h_ref = _selective_scan_loop(u, delta, A, B, C, D, z)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    # continuing from the state after a prefix equals scanning the whole sequence
    y1, h1 = selective_scan(u[:, :7], delta[:, :7], A, B[:, :7], C[:, :7], D, z[:, :7], method=method)
    y2, _ = selective_scan(u[:, 7:], delta[:, 7:], A, B[:, 7:], C[:, 7:], D, z[:, 7:], h0=h1, method=method)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("discretization", ["mamba", "zoh"])
def test_time_invariant_ssm_is_a_convolution(discretization):
    torch.manual_seed(2)
    Bt, L, E, N = 2, 40, 3, 5
    u = torch.randn(Bt, L, E, dtype=torch.float64)
    delta = torch.rand(E, dtype=torch.float64) * 0.5 + 0.01
    A = -torch.rand(E, N, dtype=torch.float64) * 2 - 0.1
    B, C = torch.randn(N, dtype=torch.float64), torch.randn(N, dtype=torch.float64)
    y, _ = selective_scan(u, delta.expand(Bt, L, E), A, B.expand(Bt, L, N), C.expand(Bt, L, N),
                          discretization=discretization)
    conv = causal_conv(u, lti_kernel(delta, A, B, C, L, discretization))
    torch.testing.assert_close(conv, y, rtol=1e-9, atol=1e-10)


def test_selective_scan_rejects_bad_shapes():
    u = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match="expected A"):
        selective_scan(u, u, torch.zeros(2, 5), torch.zeros(1, 4, 5), torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="discretization"):
        selective_scan(u, u, torch.zeros(3, 5), torch.zeros(1, 4, 5), torch.zeros(1, 4, 5), discretization="euler")


# --- the Mamba model against Hugging Face --------------------------------------------------------------------

@pytest.mark.parametrize("scan", ["sequential", "associative", "chunked"])
@pytest.mark.parametrize("hf_kw", [{}, {"use_bias": True, "use_conv_bias": False, "conv_kernel": 3}])
def test_logits_match_hf_mamba(scan, hf_kw):
    hf = _hf_model(**hf_kw)
    model = MambaLM.from_hf(hf, scan=scan).eval()
    ids = torch.randint(0, 97, (3, 23))
    with torch.no_grad():
        ref, out = hf(ids).logits, model(ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_recurrent_decoding_equals_parallel_forward():
    model = MambaLM.from_hf(_hf_model(seed=3)).eval()
    ids = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        full = model(ids).logits
        cache = MambaCache()
        steps = [model(ids[:, :1], cache=cache).logits] + [model(ids[:, t : t + 1], cache=cache).logits
                                                          for t in range(1, 17)]
        cache2 = MambaCache()  # a parallel prefill, then recurrent steps
        mixed = [model(ids[:, :9], cache=cache2).logits] + [model(ids[:, t : t + 1], cache=cache2).logits
                                                           for t in range(9, 17)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(mixed, 1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 17 and cache.nbytes == cache2.nbytes  # fixed size, whatever the path


def test_greedy_generation_matches_hf_and_padding_is_invisible():
    hf = _hf_model(seed=4)
    model = MambaLM.from_hf(hf).eval()
    ids = torch.randint(0, 97, (1, 6))
    ref = hf.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    ours = generate(model, ids, max_new_tokens=12, cache=MambaCache())
    assert torch.equal(ours, ref)
    # a left-padded batch gives each row what it gets alone
    short = torch.randint(0, 97, (1, 3))
    batch = torch.cat([ids, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch, dtype=torch.bool)
    mask[1, :3] = False
    both = generate(model, batch, max_new_tokens=5, attention_mask=mask, cache=MambaCache())
    alone = generate(model, short, max_new_tokens=5, cache=MambaCache())
    assert torch.equal(both[1, 3:], alone[0])
    assert torch.equal(both[0, :11], ours[0, :11])


def test_cache_size_does_not_grow_and_beams_reorder():
    model = MambaLM(MambaConfig(vocab_size=20, d_model=16, n_layers=2, d_state=4)).eval()
    cache = MambaCache()
    with torch.no_grad():
        model(torch.randint(0, 20, (2, 5)), cache=cache)
        size = cache.nbytes
        for _ in range(20):
            model(torch.randint(0, 20, (2, 1)), cache=cache)
    assert cache.nbytes == size == 2 * 2 * (32 * 3 + 32 * 4) * 4  # layers · batch · E·((K−1) + N) · 4 bytes
    before = cache.ssm[0].clone()
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.ssm[0][0], before[1])


def test_scan_methods_give_the_same_gradients():
    torch.manual_seed(5)
    cfg = MambaConfig(vocab_size=30, d_model=16, n_layers=2, d_state=4)
    base = MambaLM(cfg).double()
    ids = torch.randint(0, 30, (2, 12))
    grads = {}
    for scan in ("sequential", "associative", "chunked"):
        model = MambaLM(dataclasses.replace(cfg, scan=scan)).double()  # the config is frozen: a model per scan
        model.load_state_dict(base.state_dict())  # with the same weights
        F.cross_entropy(model(ids).logits[:, :-1].reshape(-1, 30), ids[:, 1:].reshape(-1)).backward()
        grads[scan] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["associative"], grads["sequential"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads["chunked"], grads["sequential"], rtol=1e-10, atol=1e-12)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match=r"^scan must be one of \(.*'chunked'.*\), got 'fft'$"):
        MambaConfig(vocab_size=10, d_model=8, n_layers=1, scan="fft")
    with pytest.raises(ValueError, match="^d_state must be a positive int, got 0$"):
        MambaConfig(vocab_size=10, d_model=8, n_layers=1, d_state=0)
    cfg = MambaConfig(vocab_size=10, d_model=8, n_layers=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.scan = "sequential"
    model = MambaLM(cfg)
    bad_ids = [
        (torch.zeros(1, 3), TypeError, r"^input_ids must be an integer torch.Tensor of token ids, got torch.float32$"),
        (torch.zeros(3, dtype=torch.long), ValueError,
         r"^input_ids must be a \(batch, length\) tensor of token ids, got shape \(3,\)$"),
        (torch.tensor([[0, 10]]), ValueError,
         r"^input_ids must hold ids in \[0, 10\) \(the vocabulary\), got ids from 0 to 10$"),
    ]
    for ids, error, message in bad_ids:
        with pytest.raises(error, match=message):
            model(ids)


def test_selection_off_makes_delta_b_c_input_independent():
    model = MambaLM(MambaConfig(vocab_size=12, d_model=16, n_layers=1, d_state=4, selective=False))
    x = torch.randn(2, 9, model.config.d_inner)
    delta, _, B, C = model.layers[0].mixer.ssm_params(x)
    for t in (delta, B, C):
        assert torch.equal(t, t[:1, :1].expand_as(t))  # the same at every token of every sequence
    selective = MambaLM(MambaConfig(vocab_size=12, d_model=16, n_layers=1, d_state=4))
    delta, _, B, _ = selective.layers[0].mixer.ssm_params(x)
    assert not torch.allclose(delta[:, 0], delta[:, 1]) and not torch.allclose(B[:, 0], B[:, 1])


def test_state_bytes_and_mixer_costs():
    cfg = MambaConfig(vocab_size=10, d_model=8, n_layers=3, d_state=5)
    cache = MambaCache()
    with torch.no_grad():
        MambaLM(cfg)(torch.randint(0, 10, (2, 4)), cache=cache)
    assert cache.nbytes == state_bytes(cfg, batch=2, bytes_per_element=4)
    rows = mixer_costs([16, 64], d_model=16, n_heads=2, d_state=4, repeats=1)
    assert [r["L"] for r in rows] == [16, 64]
    # attention holds (H, L, L) scores: 16x the length-16 peak at 4x the length, up to the O(L) tensors
    assert rows[1]["attention_peak_mb"] > 8 * rows[0]["attention_peak_mb"]
    assert rows[1]["mamba_peak_mb"] < 6 * rows[0]["mamba_peak_mb"]
