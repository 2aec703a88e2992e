"""lmkit.checks: the shared argument checks return the value or name the argument, the rule and the value."""

from __future__ import annotations

import pytest
import torch

from lmkit import checks


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_check_bits_returns_a_bit_width(bits):
    assert checks.check_bits(bits) == bits


@pytest.mark.parametrize("bad", [1, 9, 0, -4, 4.0, True, "4", None])
def test_check_bits_names_the_rule(bad):
    with pytest.raises(ValueError, match=rf"^bits must be an integer in 2\.\.8, got {bad!r}$".replace("(", r"\(")):
        checks.check_bits(bad)
    with pytest.raises(ValueError, match=r"^wbits must be an integer in 3\.\.4"):
        checks.check_bits(2, minimum=3, maximum=4, name="wbits")


def test_check_token_ids_accepts_ids_in_the_vocabulary():
    ids = torch.tensor([[0, 4, 9]])
    assert checks.check_token_ids("input_ids", ids, vocab_size=10) is ids
    assert checks.check_token_ids("ids", torch.tensor([1, 2], dtype=torch.int32), ndim=1).dtype == torch.int32
    assert checks.check_token_ids("ids", torch.zeros(0, 0, dtype=torch.long), vocab_size=5).numel() == 0


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([[1, 2]], TypeError, "input_ids must be an integer torch.Tensor of token ids, got list"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "got torch.float32"),
        (torch.tensor([[1, 2]], dtype=torch.uint8), TypeError, "got torch.uint8"),  # F.embedding rejects it
        (torch.tensor([1, 2]), ValueError, r"must be a \(batch, length\) tensor of token ids, got shape \(2,\)"),
        (torch.tensor([[1, 10]]), ValueError, r"must hold ids in \[0, 10\) \(the vocabulary\), got ids from 1 to 10"),
        (torch.tensor([[-1, 3]]), ValueError, r"got ids from -1 to 3"),
    ],
)
def test_check_token_ids_names_the_problem(ids, error, message):
    with pytest.raises(error, match=message):
        checks.check_token_ids("input_ids", ids, vocab_size=10)


def test_check_tensor_returns_the_tensor():
    x = torch.zeros(2, 3)
    assert checks.check_tensor("x", x) is x
    assert checks.check_tensor("x", x, 2, "(batch, length)", floating=True) is x
    assert checks.check_tensor("ids", torch.zeros(4, dtype=torch.long), 1) is not None


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "message"),
    [
        ([[0.0]], {}, TypeError, r"^x must be a torch\.Tensor, got list$"),
        (None, {}, TypeError, r"^x must be a torch\.Tensor, got NoneType$"),
        (torch.zeros(2, dtype=torch.long), {"floating": True}, TypeError,
         r"^x must be a floating-point tensor, got torch\.int64$"),
        (torch.zeros(3), {"ndim": 2, "layout": "(batch, length)"}, ValueError,
         r"^x must be a \(batch, length\) tensor, got shape \(3,\)$"),
        (torch.zeros(1, 2, 3), {"ndim": 2}, ValueError, r"^x must be a 2-D tensor, got shape \(1, 2, 3\)$"),
    ],
)
def test_check_tensor_names_the_problem(value, kwargs, error, message):
    with pytest.raises(error, match=message):
        checks.check_tensor("x", value, **kwargs)
