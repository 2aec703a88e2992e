"""Bad input for the modules added last: lmkit.retrieval, lmkit.ssm, lmkit.timeseries and lmkit.quant.fast_linear.

Bad shapes and dtypes, empty and non-finite inputs, ids and rows outside their range, zero or negative sizes and
arguments of the wrong type, given to the public function where the data enters. Every case asserts either the
exception type and the whole message (the argument, the rule and the value), or a correct result checked against
a reference (the plain recurrence, ``F.linear``, a softmax, the float layer ...). Every case runs under an alarm, so
an input that made lmkit hang would fail instead of freezing the suite. The real-model cases are marked slow.
"""

from __future__ import annotations

import copy
import functools
import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lmkit.quant.fast_linear import BF16Linear, Int8Linear, fuse_projections, prepare_for_decoding, to_bf16, to_int8
from lmkit.retrieval import (
    Chunk,
    ExactIndex,
    Retriever,
    answer,
    build_prompt,
    chunk_documents,
    chunk_words,
    covers,
    evidence_spans,
    is_correct,
    recall_at_k,
)
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
from lmkit.timeseries.forecasting import (
    LinearForecaster,
    last_value,
    mae,
    mse,
    seasonal_naive,
    synthetic_series,
    windows,
)
from lmkit.timeseries.informer import (
    Distilling,
    InformerEncoder,
    ProbSparseSelfAttention,
    default_u,
    prob_sparse_attention,
    sample_keys,
    sparsity_measure,
)
from lmkit.timeseries.timellm import (
    PatchEmbedding,
    Reprogramming,
    TimeLLM,
    revin,
    revin_inverse,
    series_prompt,
    top_lags,
)
from lmkit.transformer.model import Transformer, TransformerConfig

NAN, INF = float("nan"), float("inf")




def lit(message: str) -> str:
    """A ``match=`` pattern for exactly ``message``."""
    return "^" + re.escape(message) + "$"


def bad(case_id: str, call, error: type[Exception], message: str):
    """A case whose ``call()`` must raise ``error`` with exactly ``message`` (a literal, see :func:`lit`)."""
    return pytest.param(call, error, lit(message), id=case_id)


def good(case_id: str, call, check):
    """A case whose ``call()`` must return a result for which ``check(result)`` holds."""
    return pytest.param(call, check, id=case_id)


def run_bad(call, error, message):
    with pytest.raises(error, match=message):
        call()


def run_good(call, check):
    assert check(call())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def row_nan(x: torch.Tensor, row: int, dim: int = 0) -> torch.Tensor:
    """``x`` with index ``row`` along ``dim`` set to NaN."""
    return x.index_fill(dim, torch.tensor([row]), NAN)


def nan_only_in(y: torch.Tensor, row: int, dim: int = 0) -> bool:
    """Whether ``y`` is NaN exactly along index ``row`` of ``dim`` and finite elsewhere (NaN stays where it came in)."""
    inside = y.index_select(dim, torch.tensor([row]))
    others = y.index_select(dim, torch.tensor([i for i in range(y.shape[dim]) if i != row]))
    return bool(inside.isnan().all()) and bool(torch.isfinite(others).all())


# =============================================================================================== lmkit.retrieval

WORDS = "one two three four five six seven".split()
CHUNK = Chunk("a", 0, 4, "one two three four")
EYE = torch.eye(3)


class CharTokenizer:
    """Stand-in for both tokenizers: ``[CLS]`` = 2 and ``[SEP]`` = 3 around a character per id (WordPiece's
    shape), and ``<|im_end|>`` a single id 1 (SmolLM2's)."""

    def encode(self, text: str) -> list[int]:
        return [1] if text == "<|im_end|>" else [2] + [10 + ord(c) % 80 for c in text] + [3]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


@functools.cache
def encoder() -> Transformer:
    """A one-layer BERT-shaped encoder: MiniLM's architecture at toy size, for :class:`Retriever`."""
    torch.manual_seed(0)
    cfg = TransformerConfig.preset("bert", vocab_size=96, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                   max_positions=64)
    return Transformer(cfg).eval()


@functools.cache
def decoder() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=96, d_model=16, n_layers=1, n_heads=2, d_ff=32)).eval()


@functools.cache
def chunks() -> list[Chunk]:
    return chunk_documents({"a": "the cat sat on the mat", "b": "dogs bark at night"}, size=3, overlap=1)


@functools.cache
def retriever() -> Retriever:
    return Retriever(encoder(), CharTokenizer(), chunks(), batch_size=2)


RETRIEVAL_BAD = [
    *[bad(f"chunk_words size={v!r}", lambda v=v: chunk_words(WORDS, v), ValueError,
          f"size (words per chunk) must be a positive int, got {v!r}") for v in (0, -1, 1.5, True, "3")],
    *[bad(f"chunk_words overlap={v!r}", lambda v=v: chunk_words(WORDS, 3, v), ValueError,
          f"overlap (words shared by neighbours, below size) must be an int in [0, 2], got {v!r}")
      for v in (-1, 3, 0.5)],
    bad("chunk_words of a str", lambda: chunk_words("one two three", 2), TypeError,
        "words must be a list of str (a text's .split()), got str"),
    bad("chunk_words of None", lambda: chunk_words(None, 2), TypeError,
        "words must be a list of str (a text's .split()), got NoneType"),
    bad("chunk_words of ints", lambda: chunk_words([1, 2], 2), TypeError,
        "words must be a list of str (a text's .split()), got an element that is not a str"),
    bad("chunk_documents of {}", lambda: chunk_documents({}), ValueError,
        "docs must be a non-empty dict of name -> text, got an empty dict"),
    bad("chunk_documents of a list", lambda: chunk_documents(["a b"]), ValueError,
        "docs must be a non-empty dict of name -> text, got list"),
    bad("chunk_documents text int", lambda: chunk_documents({"a": 3}), TypeError,
        "docs must map str names to str texts, got 'a' -> int"),
    bad("chunk_documents name int", lambda: chunk_documents({1: "a b"}), TypeError,
        "docs must map str names to str texts, got 1 -> str"),
    bad("evidence_spans docs str", lambda: evidence_spans("one two", "two"), ValueError,
        "docs must be a non-empty dict of name -> text, got str"),
    bad("evidence_spans text None", lambda: evidence_spans({"a": None}, "two"), TypeError,
        "docs must map str names to str texts, got 'a' -> NoneType"),
    bad("evidence_spans evidence None", lambda: evidence_spans({"a": "one"}, None), TypeError,
        "evidence must be a str, got NoneType"),
    bad("evidence_spans evidence list", lambda: evidence_spans({"a": "one"}, ["one"]), TypeError,
        "evidence must be a str, got list"),
    bad("evidence_spans evidence blank", lambda: evidence_spans({"a": "one"}, " \n"), ValueError,
        "evidence must contain at least one word"),
    *[bad(f"covers fraction={v!r}", lambda v=v: covers(CHUNK, [("a", 10, 12)], v), ValueError,
          f"fraction must be a finite number in (0.0, 1.0], got {v!r}") for v in (0, -0.5, 1.5, NAN, INF, "0.5", True)],
    bad("covers chunk str", lambda: covers("one two", [("a", 0, 1)]), TypeError, "chunk must be a Chunk, got str"),
    bad("covers span of two", lambda: covers(CHUNK, [("a", 1)]), ValueError,
        "spans must be (doc, start, end) with 0 <= start < end, got ('a', 1)"),
    bad("covers span reversed", lambda: covers(CHUNK, [("a", 3, 1)]), ValueError,
        "spans must be (doc, start, end) with 0 <= start < end, got ('a', 3, 1)"),
    bad("covers spans str", lambda: covers(CHUNK, "a"), TypeError,
        "spans must be a list of (doc, start, end), got str"),
    bad("ExactIndex width 0", lambda: ExactIndex(torch.ones(3, 0)), ValueError,
        "embeddings must have width d >= 1, got shape (3, 0)"),
    bad("ExactIndex NaN", lambda: ExactIndex(row_nan(torch.ones(3, 2), 1)), ValueError,
        "embeddings must be finite, got NaN or inf in row 1"),
    bad("ExactIndex inf", lambda: ExactIndex(torch.tensor([[INF, 0.0]])), ValueError,
        "embeddings must be finite, got NaN or inf in row 0"),
    bad("ExactIndex list", lambda: ExactIndex([[1.0, 0.0]]), ValueError,
        "embeddings must be a floating-point (N, d) tensor"),
    bad("ExactIndex no vectors", lambda: ExactIndex(torch.ones(0, 3)), ValueError,
        "an index needs at least one vector"),
    *[bad(f"search k={v!r}", lambda v=v: ExactIndex(EYE).search(torch.ones(3), v), ValueError,
          f"k must be a positive int, got {v!r}") for v in (0, -1, 1.5, True, None)],
    bad("search queries list", lambda: ExactIndex(EYE).search([1.0, 0.0, 0.0]), TypeError,
        "queries must be a torch.Tensor of embeddings, got list"),
    bad("search queries NaN", lambda: ExactIndex(EYE).search(torch.tensor([NAN, 1.0, 0.0])), ValueError,
        "queries must be finite, got NaN or inf in row 0"),
    bad("search queries inf row 1", lambda: ExactIndex(EYE).search(torch.tensor([[0.0, 1, 0], [INF, 1, 0]])),
        ValueError, "queries must be finite, got NaN or inf in row 1"),
    bad("search queries wrong width", lambda: ExactIndex(EYE).search(torch.ones(2, 4)), ValueError,
        "queries must be (Q, 3), got (2, 4)"),
    *[bad(f"recall_at_k k={v!r}", lambda v=v: recall_at_k([[False, True]], v), ValueError,
          f"k must be a positive int, got {v!r}") for v in (0, -1, 1.5, True)],
    bad("recall_at_k None", lambda: recall_at_k(None, 1), TypeError,
        "ranked must be a list of rows of bools (one per query), got NoneType"),
    bad("recall_at_k no queries", lambda: recall_at_k([], 1), ValueError, "recall needs at least one query"),
    bad("build_prompt question None", lambda: build_prompt(None), TypeError, "question must be a str, got NoneType"),
    bad("build_prompt question blank", lambda: build_prompt("  "), ValueError,
        "question must hold at least one word, got '  '"),
    bad("build_prompt passages str", lambda: build_prompt("Why?", "abc"), TypeError,
        "passages must be a list of str, got 'abc'"),
    bad("build_prompt passages of ints", lambda: build_prompt("Why?", [1, 2]), TypeError,
        "passages must be a list of str, got [1, 2]"),
    bad("build_prompt system int", lambda: build_prompt("Why?", system=3), TypeError,
        "system must be a str or None, got int"),
    bad("is_correct answers str", lambda: is_correct("a b", "ab"), ValueError,
        "answers must be a non-empty list of non-blank str, got 'ab'"),
    bad("is_correct no answers", lambda: is_correct("a b", []), ValueError,
        "answers must be a non-empty list of non-blank str, got []"),
    bad("is_correct empty answer", lambda: is_correct("anything", [""]), ValueError,
        "answers must be a non-empty list of non-blank str, got ['']"),
    bad("is_correct int answer", lambda: is_correct("It is 4", [4]), ValueError,
        "answers must be a non-empty list of non-blank str, got [4]"),
    bad("is_correct generated None", lambda: is_correct(None, ["a"]), TypeError,
        "generated must be a str, got NoneType"),
    bad("is_correct question int", lambda: is_correct("a", ["a"], 3), TypeError,
        "question must be a str or None, got int"),
    *[bad(f"Retriever batch_size={v!r}", lambda v=v: Retriever(encoder(), CharTokenizer(), chunks(), batch_size=v),
          ValueError, f"batch_size must be a positive int, got {v!r}") for v in (0, -1, 1.5, True)],
    *[bad(f"Retriever max_length={v!r}", lambda v=v: Retriever(encoder(), CharTokenizer(), chunks(), max_length=v),
          ValueError, f"max_length must be a positive int, got {v!r}") for v in (0, -3)],
    bad("Retriever chunks of str", lambda: Retriever(encoder(), CharTokenizer(), ["the cat", "a dog"]), TypeError,
        "chunks must be Chunk objects (from chunk_documents), got str"),
    bad("Retriever no chunks", lambda: Retriever(encoder(), CharTokenizer(), []), ValueError,
        "a Retriever needs at least one chunk: chunks must be a non-empty list of Chunk, got []"),
    bad("retrieve k=0", lambda: retriever().retrieve("cat", 0), ValueError, "k must be a positive int, got 0"),
    bad("retrieve a list", lambda: retriever().retrieve(["cat"]), TypeError, "question must be a str, got list"),
    bad("embed_queries of a str", lambda: retriever().embed_queries("cat"), TypeError,
        "questions must be a list of str, got a str: wrap a single question in a list"),
    bad("rank no questions", lambda: retriever().rank([], 2), TypeError,
        "sentences must be a non-empty list of strings"),
    bad("answer question None", lambda: answer(decoder(), CharTokenizer(), None), TypeError,
        "question must be a str, got NoneType"),
    bad("answer passages str", lambda: answer(decoder(), CharTokenizer(), "Why?", "abc"), TypeError,
        "passages must be a list of str, got 'abc'"),
    bad("answer max_new_tokens=0", lambda: answer(decoder(), CharTokenizer(), "Why?", max_new_tokens=0), ValueError,
        "max_new_tokens must be a positive int, got 0"),
]

RETRIEVAL_GOOD = [
    good("chunk_words of no words", lambda: chunk_words([], 2), lambda r: r == []),
    good("chunk_words size past the end", lambda: chunk_words(WORDS, 100), lambda r: r == [(0, 7)]),
    good("chunk_words of a tuple", lambda: chunk_words(tuple(WORDS), 4, 1), lambda r: r == [(0, 4), (3, 7)]),
    good("chunk_documents skips an empty text", lambda: chunk_documents({"a": "", "b": "x y"}, 4, 1),
         lambda r: r == [Chunk("b", 0, 2, "x y")]),
    good("evidence_spans of missing evidence", lambda: evidence_spans({"a": "one two"}, "three"), lambda r: r == []),
    good("covers a span that only touches", lambda: covers(CHUNK, [("a", 4, 6)]), lambda r: r is False),
    good("covers at fraction 1", lambda: covers(CHUNK, [("a", 2, 4)], 1.0), lambda r: r is True),
    good("covers spans as lists", lambda: covers(CHUNK, [["a", 3, 5]]), lambda r: r is True),
    good("covers no spans", lambda: covers(CHUNK, []), lambda r: r is False),
    good("ExactIndex zero vector ranks last", lambda: ExactIndex(torch.tensor([[1.0, 0.0], [0.0, 0.0]])).search(
        torch.tensor([1.0, 0.0]), 2)[1].tolist(), lambda r: r == [[0, 1]]),
    good("search no queries", lambda: [t.shape for t in ExactIndex(EYE).search(torch.ones(0, 3), 2)],
         lambda r: r == [(0, 2), (0, 2)]),
    good("search int queries", lambda: ExactIndex(EYE).search(torch.tensor([0, 5, 1]), 1)[1].tolist(),
         lambda r: r == [[1]]),
    good("search float64 queries", lambda: ExactIndex(EYE).search(torch.tensor([0.0, 0, 1], dtype=torch.float64), 1),
         lambda r: r[1].tolist() == [[2]] and r[0].dtype == torch.float32),
    good("recall_at_k of a bool tensor", lambda: recall_at_k(torch.tensor([[False, True], [False, False]]), 2),
         lambda r: r == 0.5),
    good("recall_at_k k past the rows", lambda: recall_at_k([[False, True]], 5), lambda r: r == 1.0),
    good("build_prompt numbers passages", lambda: build_prompt("q?", ("p1", "p2")),
         lambda r: "[1] p1\n\n[2] p2\n\nQuestion: q?" in r),
    good("is_correct tuple of answers", lambda: is_correct("It returns None.", ("None",)), lambda r: r is True),
    good("retrieve k past the chunks", lambda: len(retriever().retrieve("cat", 99)), lambda r: r == len(chunks())),
    good("retrieve a chunk's own text", lambda: retriever().retrieve(chunks()[2].text, 1)[0],
         lambda r: r == chunks()[2]),
    good("answer on a stand-in model", lambda: answer(decoder(), CharTokenizer(), "Why?", ["p"], max_new_tokens=3),
         lambda r: isinstance(r, str) and len(r) <= 3),
]


@pytest.mark.parametrize("call, error, message", RETRIEVAL_BAD)
def test_retrieval_bad_input_is_named(call, error, message):
    run_bad(call, error, message)


@pytest.mark.parametrize("call, check", RETRIEVAL_GOOD)
def test_retrieval_edge_input_gives_the_right_result(call, check):
    run_good(call, check)


@pytest.mark.slow
def test_retriever_on_real_minilm_names_bad_queries(minilm_model, minilm_tokenizer):
    docs = {"a": "The assert statement raises AssertionError when its test is false.", "b": "Lists are mutable."}
    real = Retriever(minilm_model, minilm_tokenizer, chunk_documents(docs, size=8, overlap=2))
    assert real.retrieve("What does assert raise?", 1)[0].doc == "a"
    with pytest.raises(TypeError, match=lit("questions must be a list of str, got a str: wrap a single question in "
                                            "a list")):
        real.embed_queries("What does assert raise?")
    with pytest.raises(ValueError, match=lit("k must be a positive int, got 0")):
        real.retrieve("What does assert raise?", 0)
    with pytest.raises(ValueError, match=lit("max_length must be a positive int, got 0")):
        Retriever(minilm_model, minilm_tokenizer, real.chunks, max_length=0)


@pytest.mark.slow
def test_smollm2_answer_names_bad_passages(smollm2_model, smollm2_tokenizer):
    with pytest.raises(TypeError, match=lit("passages must be a list of str, got 'The answer is 4.'")):
        answer(smollm2_model, smollm2_tokenizer, "What is 2 + 2?", "The answer is 4.")
    with pytest.raises(ValueError, match=lit("question must hold at least one word, got ''")):
        answer(smollm2_model, smollm2_tokenizer, "")
    assert is_correct(answer(smollm2_model, smollm2_tokenizer, "What is 2 + 2?", ["2 + 2 = 4."]), ["4", "four"])


# ==================================================================================================== lmkit.ssm

A3, B3 = torch.rand(2, 5, 3, generator=gen(1)), torch.rand(2, 5, 3, generator=gen(2))
SCANS = {"sequential": scan_sequential, "associative": scan_associative, "chunked": scan_chunked,
         "linear_scan": linear_scan}
Bt, L, E, N = 2, 6, 3, 4
U, DT = torch.randn(Bt, L, E, generator=gen(3)), torch.rand(Bt, L, E, generator=gen(4)) * 0.1 + 0.01
AA = -torch.rand(E, N, generator=gen(5)) - 0.5
BB, CC = torch.randn(Bt, L, N, generator=gen(6)), torch.randn(Bt, L, N, generator=gen(7))
D1, B1, C1 = torch.full((E,), 0.1), torch.randn(N, generator=gen(8)), torch.randn(N, generator=gen(9))
MAMBA = dict(vocab_size=20, d_model=8, n_layers=2, d_state=4)


def ss(**change):
    """:func:`selective_scan` of the shapes above, with ``change`` applied."""
    return selective_scan(**{**dict(u=U, delta=DT, A=AA, B=BB, C=CC), **change})


@functools.cache
def mamba() -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(MambaConfig(**MAMBA)).eval()


def filled_cache(batch: int = 2) -> MambaCache:
    cache = MambaCache()
    with torch.no_grad():
        mamba()(torch.randint(0, 20, (batch, 3), generator=gen(10)), cache=cache)
    return cache


IDS = torch.randint(0, 20, (2, 5), generator=gen(11))
H8 = torch.randn(2, 5, 8, generator=gen(12))
STATE = "state must be (conv, ssm) of shapes ((2, 16, 3), (2, 16, 4)), got {}: a cache of another batch size or model?"


def mixer():
    return mamba().layers[0].mixer


SSM_BAD = [
    *[case for name, scan in SCANS.items() for case in (
        bad(f"{name} a list", lambda scan=scan: scan(A3.tolist(), B3), TypeError, "a must be a torch.Tensor, got list"),
        bad(f"{name} b None", lambda scan=scan: scan(A3, None), TypeError, "b must be a torch.Tensor, got NoneType"),
        bad(f"{name} h0 list", lambda scan=scan: scan(A3, B3, [[0.0] * 3] * 2), TypeError,
            "h0 must be a torch.Tensor, got list"),
        bad(f"{name} no steps", lambda scan=scan: scan(A3[:, :0], B3[:, :0], torch.zeros(2, 3)), ValueError,
            "a and b must hold at least one step (length >= 1), got shape (2, 0, 3)"),
    )],
    *[bad(f"{f.__name__} chunk_size={v!r}", lambda f=f, v=v: f(A3, B3, chunk_size=v), ValueError,
          f"chunk_size must be a positive int, got {v!r}") for f in (scan_chunked, linear_scan) for v in (0, True,
              "2")],
    bad("selective_scan u list", lambda: ss(u=U.tolist()), TypeError, "u must be a torch.Tensor, got list"),
    bad("selective_scan A None", lambda: ss(A=None), TypeError, "A must be a torch.Tensor, got NoneType"),
    bad("selective_scan u 2-D", lambda: ss(u=U[0]), ValueError,
        "u and delta must both be (batch, length, channels), got (6, 3), (2, 6, 3)"),
    bad("selective_scan delta of one channel", lambda: ss(delta=DT[..., :1]), ValueError,
        "u and delta must both be (batch, length, channels), got (2, 6, 3), (2, 6, 1)"),
    bad("selective_scan A 1-D", lambda: ss(A=AA[:, 0]), ValueError,
        "expected A (E=3, N), B and C (batch, length, N); got A (3,), B (2, 6, 4), C (2, 6, 4)"),
    bad("selective_scan D of 4", lambda: ss(D=torch.ones(E + 1)), ValueError, "D must be (channels,) = (3,), got (4,)"),
    bad("selective_scan D broadcast", lambda: ss(D=torch.ones(1)), ValueError,
        "D must be (channels,) = (3,), got (1,)"),
    bad("selective_scan D list", lambda: ss(D=[1.0] * E), TypeError, "D must be a torch.Tensor, got list"),
    bad("selective_scan z broadcast", lambda: ss(z=torch.randn(1, L, E)), ValueError,
        "z must have u's shape (2, 6, 3), got (1, 6, 3)"),
    bad("selective_scan z wide", lambda: ss(z=torch.randn(Bt, L, E + 1)), ValueError,
        "z must have u's shape (2, 6, 3), got (2, 6, 4)"),
    bad("selective_scan no steps", lambda: ss(u=U[:, :0], delta=DT[:, :0], B=BB[:, :0], C=CC[:, :0]), ValueError,
        "u must hold at least one step (length >= 1), got shape (2, 0, 3)"),
    bad("selective_scan h0 transposed", lambda: ss(h0=torch.zeros(Bt, N, E)), ValueError,
        "h0 must be (batch, ...) = (2, 3, 4), got (2, 4, 3)"),
    *[bad(f"lti_kernel length={v!r}", lambda v=v: lti_kernel(D1, AA, B1, C1, v), ValueError,
          f"length must be a positive int, got {v!r}") for v in (0, -1, 1.5, True, None)],
    bad("lti_kernel discretization", lambda: lti_kernel(D1, AA, B1, C1, 5, "exact"), ValueError,
        "discretization must be one of ('mamba', 'zoh'), got 'exact'"),
    bad("lti_kernel delta (E, 1)", lambda: lti_kernel(D1[:, None], AA, B1, C1, 5), ValueError,
        "expected delta (E,), A (E, N), B and C (N,); got delta (3, 1), A (3, 4), B (4,), C (4,)"),
    bad("lti_kernel B too long", lambda: lti_kernel(D1, AA, torch.ones(N + 1), C1, 5), ValueError,
        "expected delta (E,), A (E, N), B and C (N,); got delta (3,), A (3, 4), B (5,), C (4,)"),
    bad("lti_kernel C (1, N)", lambda: lti_kernel(D1, AA, B1, C1[None], 5), ValueError,
        "expected delta (E,), A (E, N), B and C (N,); got delta (3,), A (3, 4), B (4,), C (1, 4)"),
    bad("lti_kernel delta list", lambda: lti_kernel([0.1] * E, AA, B1, C1, 5), TypeError,
        "delta must be a torch.Tensor, got list"),
    bad("causal_conv u 2-D", lambda: causal_conv(U[0], torch.ones(E, L)), ValueError,
        "u must be a (batch, length, channels) tensor, got shape (6, 3)"),
    bad("causal_conv kernel 1-D", lambda: causal_conv(U, torch.ones(L)), ValueError,
        "kernel must be a (channels, taps) tensor, got shape (6,)"),
    bad("causal_conv kernel broadcast", lambda: causal_conv(U, torch.ones(1, L)), ValueError,
        "u (batch, length >= 1, E) and kernel (E, taps) do not fit: u (2, 6, 3), kernel (1, 6)"),
    bad("causal_conv no steps", lambda: causal_conv(U[:, :0], torch.ones(E, 2)), ValueError,
        "u (batch, length >= 1, E) and kernel (E, taps) do not fit: u (2, 0, 3), kernel (3, 2)"),
    bad("zoh A list", lambda: zoh(torch.tensor(0.1), [-1.0], torch.ones(1)), TypeError,
        "A must be a torch.Tensor, got list"),
    bad("zoh B None", lambda: zoh(torch.tensor(0.1), -torch.ones(1), None), TypeError,
        "B must be a torch.Tensor, got NoneType"),
    bad("zoh delta str", lambda: zoh("0.1", -torch.ones(1), torch.ones(1)), ValueError,
        "delta must be a finite number, got '0.1'"),
    bad("zoh shapes", lambda: zoh(torch.ones(3), torch.ones(4), torch.ones(3)), ValueError,
        "delta, A and B must broadcast together, got shapes [(3,), (4,), (3,)]"),
    bad("zoh_simplified shapes", lambda: zoh_simplified(torch.ones(3), torch.ones(3), torch.ones(2, 2)), ValueError,
        "delta, A and B must broadcast together, got shapes [(3,), (3,), (2, 2)]"),
    *[bad(f"zoh_matrix delta={v!r}", lambda v=v: zoh_matrix(v, -torch.eye(3), torch.ones(3, 2)), ValueError,
          f"delta (the step size) must be a finite number >= 0.0, got {v!r}") for v in (NAN, INF, -0.1, True, None)],
    bad("zoh_matrix A int", lambda: zoh_matrix(0.1, -torch.eye(3, dtype=torch.long), torch.ones(3, 2)), TypeError,
        "A must be a floating-point tensor, got torch.int64"),
    bad("zoh_matrix B list", lambda: zoh_matrix(0.1, -torch.eye(3), [[1.0, 1.0]] * 3), TypeError,
        "B must be a torch.Tensor, got list"),
    *[bad(f"MambaConfig {k}={v!r}", lambda k=k, v=v: MambaConfig(**{**MAMBA, k: v}), ValueError, message)
      for k, v, message in [
          ("dt_rank", 0, "dt_rank must be a positive int, got 0"),
          ("dt_rank", 1.5, "dt_rank must be a positive int, got 1.5"),
          ("norm_eps", -1e-5, "norm_eps must be a finite number >= 0.0, got -1e-05"),
          ("norm_eps", NAN, "norm_eps must be a finite number >= 0.0, got nan"),
          ("dt_min", 0.0, "dt_min must be a finite number > 0.0, got 0.0"),
          ("dt_max", 1e-4, "dt_max (at least dt_min) must be a finite number >= 0.001, got 0.0001"),
      ]],
    *[bad(f"MambaConfig {k}={v!r}", lambda k=k, v=v: MambaConfig(**{**MAMBA, k: v}), TypeError,
          f"{k} must be a bool, got {v!r}") for k, v in [("selective", "no"), ("bias", "False"), ("conv_bias", None),
                                                          ("tie_embeddings", 1)]],
    bad("MambaLM ids past the vocabulary", lambda: mamba()(IDS + 20), ValueError,
        "input_ids must hold ids in [0, 20) (the vocabulary), got ids from 20 to 39"),
    bad("MambaLM mask short", lambda: mamba()(IDS, attention_mask=torch.ones(2, 3)), ValueError,
        "attention_mask must be (batch, cached + new) = (2, 5), got (2, 3)"),
    bad("MambaLM mask of another batch", lambda: mamba()(IDS, attention_mask=torch.ones(1, 5)), ValueError,
        "attention_mask must be (batch, cached + new) = (2, 5), got (1, 5)"),
    bad("MambaLM mask list", lambda: mamba()(IDS, attention_mask=[[1] * 5] * 2), TypeError,
        "attention_mask must be a torch.Tensor, got list"),
    bad("MambaLM mask without the cache", lambda: mamba()(IDS[:, :1], attention_mask=torch.ones(2, 1),
                                                          cache=filled_cache()), ValueError,
        "attention_mask must be (batch, cached + new) = (2, 4), got (2, 1)"),
    bad("MambaLM cache dict", lambda: mamba()(IDS, cache={}), TypeError, "cache must be a MambaCache, got dict"),
    bad("MambaLM cache of another batch, one token", lambda: mamba()(IDS[:, :1], cache=filled_cache(3)), ValueError,
        STATE.format("((3, 16, 3), (3, 16, 4))")),
    bad("MambaLM cache of another batch, prefill", lambda: mamba()(IDS, cache=filled_cache(3)), ValueError,
        STATE.format("((3, 16, 3), (3, 16, 4))")),
    bad("Mixer hidden 2-D", lambda: mixer()(H8[0]), ValueError,
        "hidden must be a (batch, length, d_model) tensor, got shape (5, 8)"),
    bad("Mixer hidden too narrow", lambda: mixer()(H8[..., :7]), ValueError,
        "hidden must be (batch, length, d_model) with d_model=8 (and length >= 1), got (2, 5, 7)"),
    bad("Mixer no tokens", lambda: mixer()(H8[:, :0]), ValueError,
        "hidden must be (batch, length, d_model) with d_model=8 (and length >= 1), got (2, 0, 8)"),
    bad("Mixer hidden float64", lambda: mixer()(H8.double()), TypeError,
        "hidden must have the weights' dtype torch.float32, got torch.float64"),
    bad("Mixer mask short", lambda: mixer()(H8, mask=torch.ones(2, 4)), ValueError,
        "mask must be a (batch, length) = (2, 5) tensor, got (2, 4)"),
    bad("Mixer conv state short", lambda: mixer()(H8, (torch.zeros(2, 16, 2), torch.zeros(2, 16, 4))), ValueError,
        STATE.format("((2, 16, 2), (2, 16, 4))")),
    bad("Mixer state list", lambda: mixer()(H8, [1, 2]), TypeError,
        "state must be a (conv, ssm) pair of tensors, got list"),
    bad("Mixer.step hidden 3-D", lambda: mixer().step(H8), ValueError,
        "hidden must be a (batch, d_model) tensor, got shape (2, 5, 8)"),
    bad("Mixer.step state of another batch", lambda: mixer().step(H8[:, 0], (torch.zeros(3, 16, 3),
                                                                           torch.zeros(3, 16, 4))), ValueError,
        STATE.format("((3, 16, 3), (3, 16, 4))")),
    *[bad(f"MambaCache.get layer={v!r}", lambda v=v: filled_cache().get(v), ValueError,
          f"layer must be a non-negative int, got {v!r}") for v in (-1, "0", 1.5, True)],
    bad("MambaCache.set layer -1", lambda: filled_cache().set(-1, torch.zeros(2, 16, 3), torch.zeros(2, 16, 4)),
        ValueError, "layer must be a non-negative int, got -1"),
    bad("MambaCache.set skips a layer", lambda: MambaCache().set(1, torch.zeros(2, 16, 3), torch.zeros(2, 16, 4)),
        ValueError, "layers must be filled in order: got layer 1 with 0 cached"),
    bad("MambaCache.set conv list", lambda: MambaCache().set(0, [0.0], torch.zeros(2, 16, 4)), TypeError,
        "conv must be a torch.Tensor, got list"),
    bad("MambaCache.set ssm 2-D", lambda: MambaCache().set(0, torch.zeros(2, 16, 3), torch.zeros(2, 16)), ValueError,
        "ssm must be a (batch, channels, d_state) tensor, got shape (2, 16)"),
    bad("MambaCache.set batches differ", lambda: MambaCache().set(0, torch.zeros(2, 16, 3), torch.zeros(3, 16, 4)),
        ValueError, "conv and ssm states must share (batch, channels), got (2, 16, 3) and (3, 16, 4)"),
    bad("MambaCache.reorder list", lambda: filled_cache().reorder([1, 0]), TypeError,
        "index must be a torch.Tensor, got list"),
    bad("MambaCache.reorder float", lambda: filled_cache().reorder(torch.tensor([1.0, 0.0])), TypeError,
        "index must be an integer tensor of batch rows, got torch.float32"),
    bad("MambaCache.reorder past the batch", lambda: filled_cache().reorder(torch.tensor([0, 2])), ValueError,
        "index must hold rows in [0, 2), got rows from 0 to 2"),
    bad("MambaCache.reorder negative", lambda: filled_cache().reorder(torch.tensor([-1, 0])), ValueError,
        "index must hold rows in [0, 2), got rows from -1 to 0"),
    bad("MambaCache.reorder 2-D", lambda: filled_cache().reorder(torch.tensor([[1, 0]])), ValueError,
        "index must be a 1-D (rows,) tensor, got shape (1, 2)"),
]


def nan_at_step_2() -> torch.Tensor:
    return torch.where(torch.arange(5)[None, :, None] == 2, NAN, B3)


def no_tokens_with_a_cache() -> tuple:
    cache = filled_cache()
    before = cache.ssm[0].clone()
    out = mamba()(IDS[:, :0], attention_mask=torch.ones(2, 3), cache=cache)
    return tuple(out.logits.shape), cache.length, before, cache.ssm[0]


def reordered_like_beams() -> bool:
    cache = filled_cache()
    before = [s.clone() for s in cache.ssm]
    cache.reorder(torch.tensor([1, 1, 0]))
    return all(torch.equal(s, b[[1, 1, 0]]) for s, b in zip(cache.ssm, before, strict=True))


SSM_GOOD = [
    *[case for name, scan in SCANS.items() for case in (
        good(f"{name} of no rows", lambda scan=scan: scan(A3[:0], B3[:0]).shape, lambda r: r == (0, 5, 3)),
        good(f"{name}: NaN stays from its step on", lambda scan=scan: scan(A3, nan_at_step_2()),
             lambda r: bool(torch.isfinite(r[:, :2]).all()) and bool(r[:, 2:].isnan().all())),
    )],
    good("scan_chunked chunk past the end", lambda: scan_chunked(A3, B3, chunk_size=50),
         lambda r: torch.allclose(r, scan_sequential(A3, B3))),
    good("selective_scan N=0 is D u", lambda: ss(A=AA[:, :0], B=BB[..., :0], C=CC[..., :0], D=torch.full((E,), 2.0))[0],
         lambda r: torch.equal(r, 2 * U)),
    good("selective_scan of no rows", lambda: [t.shape for t in ss(u=U[:0], delta=DT[:0], B=BB[:0], C=CC[:0])],
         lambda r: r == [(0, L, E), (0, E, N)]),
    good("selective_scan NaN row stays in its row", lambda: ss(u=row_nan(U, 1))[0], lambda r: nan_only_in(r, 1)),
    good("causal_conv drops taps past L", lambda: causal_conv(U, lti_kernel(D1, AA, B1, C1, 3 * L)),
         lambda r: torch.allclose(r, causal_conv(U, lti_kernel(D1, AA, B1, C1, L)), atol=1e-6)),
    good("causal_conv with taps past L is the scan", lambda: causal_conv(U, lti_kernel(D1, AA, B1, C1, 2 * L + 3)),
         lambda r: torch.allclose(r, selective_scan(U, D1.expand(Bt, L, E), AA, B1.expand(Bt, L, N),
                                                    C1.expand(Bt, L, N))[0], atol=1e-5)),
    good("causal_conv short kernel zero-padded", lambda: causal_conv(U, torch.ones(E, 2)),
         lambda r: torch.allclose(r, U + F.pad(U, (0, 0, 1, 0))[:, :L])),
    good("causal_conv int u", lambda: causal_conv(torch.ones(1, 3, E, dtype=torch.long), torch.ones(E, 3)),
         lambda r: torch.allclose(r, torch.arange(1.0, 4.0)[None, :, None].expand(1, 3, E))),
    good("zoh of a float step", lambda: zoh(0.1, -torch.ones(1), torch.ones(1))[1].item(),
         lambda r: math.isclose(r, 1 - math.exp(-0.1), rel_tol=1e-6)),
    good("zoh at A = 0 is delta B", lambda: zoh(torch.tensor(0.1), torch.zeros(1), torch.tensor([2.0]))[1].item(),
         lambda r: math.isclose(r, 0.2, rel_tol=1e-6)),
    good("zoh_matrix step 0", lambda: zoh_matrix(0.0, -torch.eye(3), torch.ones(3, 2)),
         lambda r: torch.equal(r[0], torch.eye(3)) and torch.equal(r[1], torch.zeros(3, 2))),
    good("zoh_matrix of an int B", lambda: zoh_matrix(0.3, -torch.eye(2), torch.ones(2, 1, dtype=torch.long)),
         lambda r: torch.allclose(r[1], zoh_matrix(0.3, -torch.eye(2), torch.ones(2, 1))[1])),
    good("zoh_matrix N=0", lambda: [t.shape for t in zoh_matrix(0.1, torch.zeros(0, 0), torch.zeros(0, 2))],
         lambda r: r == [(0, 0), (0, 2)]),
    good("MambaLM no tokens", lambda: mamba()(IDS[:, :0]).logits.shape, lambda r: r == (2, 0, 20)),
    good("MambaLM no tokens leaves the cache", no_tokens_with_a_cache,
         lambda r: r[0] == (2, 0, 20) and r[1] == 3 and torch.equal(r[2], r[3])),
    good("MambaLM of no rows", lambda: mamba()(IDS[:0]).logits.shape, lambda r: r == (0, 5, 20)),
    good("MambaLM d_conv=1", lambda: MambaLM(MambaConfig(**{**MAMBA, "d_conv": 1}))(IDS).logits.shape,
         lambda r: r == (2, 5, 20)),
    good("MambaLM all-true mask is no mask", lambda: mamba()(IDS, attention_mask=torch.ones(2, 5, dtype=torch.bool))
         .logits, lambda r: torch.equal(r, mamba()(IDS).logits)),
    good("Mixer.step equals forward", lambda: mixer().step(H8[:, 0])[0],
         lambda r: torch.allclose(r, mixer()(H8[:, :1])[0][:, 0], atol=1e-6)),
    good("MambaCache.get past the layers", lambda: filled_cache().get(5), lambda r: r is None),
    good("MambaCache.reorder like beams", reordered_like_beams, lambda r: r),
    good("MambaCache.reorder an empty cache", lambda: MambaCache().reorder(torch.tensor([0, 0])), lambda r: r is None),
]


@pytest.mark.parametrize("call, error, message", SSM_BAD)
def test_ssm_bad_input_is_named(call, error, message):
    run_bad(call, error, message)


@pytest.mark.parametrize("call, check", SSM_GOOD)
def test_ssm_edge_input_gives_the_right_result(call, check):
    with torch.no_grad():
        run_good(call, check)


# ============================================================================================= lmkit.timeseries

Q = torch.randn(2, 3, 8, 4, generator=gen(13))
X = torch.randn(3, 10, generator=gen(14))
XF, YF = torch.randn(30, 5, generator=gen(15)), torch.randn(30, 2, generator=gen(16))
S20 = torch.arange(20.0)
QK = "q (..., L_Q, d) and k (..., L_K >= 1, d) must share d >= 1, got q {}, k {}"
TIMELLM = dict(seq_len=24, pred_len=6, patch_len=8, stride=4, d_model=16, n_heads=4, d_ff=16, n_prototypes=10,
               n_layers=2, description="toy")


class PromptTokenizer:
    def encode(self, text: str) -> list[int]:
        return [min(ord(c), 299) for c in text]


@functools.cache
def llama() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=300, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=64,
                            positions="rope", norm="rmsnorm", activation="swiglu", mask="causal")
    return Transformer(cfg).eval()


@functools.cache
def timellm() -> TimeLLM:
    torch.manual_seed(0)
    return TimeLLM(llama(), PromptTokenizer(), **TIMELLM)


def sizes(**change):
    return {**TIMELLM, **change}


TIMESERIES_BAD = [
    *[bad(f"default_u factor={v!r}", lambda v=v: default_u(50, v), ValueError,
        f"factor must be a positive int, got {v!r}")
      for v in (0, -1, 2.5, True)],
    *[bad(f"sample_keys {k}={v!r}", lambda k=k, v=v: sample_keys(**{**dict(n_queries=4, n_keys=6, n_sample=3), k: v}),
          ValueError, f"{k} must be a {rule} int, got {v!r}")
      for k, v, rule in [("n_queries", -1, "non-negative"), ("n_queries", 2.0, "non-negative"), ("n_keys", 0,
          "positive"),
                         ("n_keys", -3, "positive"), ("n_keys", 1.5, "positive")]],
    bad("sparsity_measure d differs", lambda: sparsity_measure(Q, Q[..., :3]), ValueError,
        QK.format((2, 3, 8, 4), (2, 3, 8, 3))),
    bad("sparsity_measure d=0", lambda: sparsity_measure(Q[..., :0], Q[..., :0]), ValueError,
        QK.format((2, 3, 8, 0), (2, 3, 8, 0))),
    bad("sparsity_measure no keys", lambda: sparsity_measure(Q, Q[:, :, :0]), ValueError,
        QK.format((2, 3, 8, 4), (2, 3, 0, 4))),
    bad("sparsity_measure q 1-D", lambda: sparsity_measure(Q[0, 0, 0], Q), ValueError, QK.format((4,), (2, 3, 8, 4))),
    bad("sparsity_measure q list", lambda: sparsity_measure(Q.tolist(), Q), TypeError,
        "q must be a torch.Tensor, got list"),
    bad("sparsity_measure key_index float", lambda: sparsity_measure(Q, Q, torch.zeros(8, 2)), TypeError,
        "key_index must be an integer tensor of key positions, got torch.float32"),
    bad("sparsity_measure key_index list", lambda: sparsity_measure(Q, Q, [[0, 1]] * 8), TypeError,
        "key_index must be a torch.Tensor, got list"),
    bad("sparsity_measure k None", lambda: sparsity_measure(Q, None), TypeError,
        "k must be a torch.Tensor, got NoneType"),
    bad("sparsity_measure key_index past the keys", lambda: sparsity_measure(Q, Q, torch.full((8, 2), 8)), ValueError,
        "key_index must hold key positions in [0, 8), got 8 to 8"),
    bad("sparsity_measure key_index negative", lambda: sparsity_measure(Q, Q, torch.full((8, 2), -1)), ValueError,
        "key_index must hold key positions in [0, 8), got -1 to -1"),
    bad("sparsity_measure no sampled keys", lambda: sparsity_measure(Q, Q, torch.zeros(8, 0, dtype=torch.long)),
        ValueError, "key_index must be (L_Q=8, n_sample >= 1), got (8, 0)"),
    bad("prob_sparse q list", lambda: prob_sparse_attention(Q.tolist(), Q, Q), TypeError,
        "q must be a torch.Tensor, got list"),
    bad("prob_sparse d=0", lambda: prob_sparse_attention(Q[..., :0], Q[..., :0], Q), ValueError,
        QK.format((2, 3, 8, 0), (2, 3, 8, 0))),
    bad("prob_sparse no queries", lambda: prob_sparse_attention(Q[:, :, :0], Q, Q), ValueError,
        "q must hold at least one query (L_Q >= 1), got shape (2, 3, 0, 4)"),
    bad("prob_sparse no keys", lambda: prob_sparse_attention(Q, Q[:, :, :0], Q[:, :, :0]), ValueError,
        QK.format((2, 3, 8, 4), (2, 3, 0, 4))),
    bad("prob_sparse dtypes differ", lambda: prob_sparse_attention(Q, Q.double(), Q), TypeError,
        "q and k must share a dtype, got torch.float32 and torch.float64"),
    bad("prob_sparse v dtype", lambda: prob_sparse_attention(Q, Q, Q.double()), TypeError,
        "v must have q's dtype torch.float32, got torch.float64"),
    bad("prob_sparse 3-D", lambda: prob_sparse_attention(Q[0], Q[0], Q[0]), ValueError,
        "q, k, v must be (batch, heads, length, dim) tensors"),
    bad("prob_sparse v shorter", lambda: prob_sparse_attention(Q, Q, Q[:, :, :5]), ValueError,
        "shapes do not match: q (2, 3, 8, 4), k (2, 3, 8, 4), v (2, 3, 5, 4)"),
    bad("prob_sparse heads differ", lambda: prob_sparse_attention(Q, Q[:, :2], Q[:, :2]), ValueError,
        "shapes do not match: q (2, 3, 8, 4), k (2, 2, 8, 4), v (2, 2, 8, 4)"),
    bad("prob_sparse causal cross-attention", lambda: prob_sparse_attention(Q[:, :, :4], Q, Q, causal=True),
        ValueError, "causal ProbSparse attention is self-attention: L_Q must equal L_K"),
    bad("prob_sparse factor 0 beside u and n_sample", lambda: prob_sparse_attention(Q, Q, Q, u=2, n_sample=3, factor=0),
        ValueError, "factor must be a positive int, got 0"),
    bad("prob_sparse factor 0", lambda: prob_sparse_attention(Q, Q, Q, factor=0), ValueError,
        "factor must be a positive int, got 0"),
    bad("prob_sparse causal str", lambda: prob_sparse_attention(Q, Q, Q, causal="yes"), TypeError,
        "causal must be a bool, got 'yes'"),
    bad("prob_sparse n_sample -1", lambda: prob_sparse_attention(Q, Q, Q, n_sample=-1), ValueError,
        "n_sample must be a positive int, got -1"),
    *[bad(f"ProbSparseSelfAttention {kw}", lambda kw=kw: ProbSparseSelfAttention(**{**dict(d_model=8, n_heads=2),
        **kw}),
          ValueError, message) for kw, message in [
        (dict(n_heads=0), "n_heads must be a positive int, got 0"),
        (dict(n_heads=-2), "n_heads must be a positive int, got -2"),
        (dict(d_model=0, n_heads=1), "d_model must be a positive int, got 0"),
        (dict(factor=0), "factor must be a positive int, got 0"),
    ]],
    bad("ProbSparseSelfAttention causal 1", lambda: ProbSparseSelfAttention(8, 2, causal=1), TypeError,
        "causal must be a bool, got 1"),
    bad("ProbSparseSelfAttention x 2-D", lambda: ProbSparseSelfAttention(8, 2)(torch.randn(5, 8)), ValueError,
        "x must be a (batch, length, d_model) tensor, got shape (5, 8)"),
    bad("ProbSparseSelfAttention x narrow", lambda: ProbSparseSelfAttention(8, 2)(torch.randn(1, 5, 6)), ValueError,
        "x must be (batch, length >= 1, d_model=8), got (1, 5, 6)"),
    bad("ProbSparseSelfAttention x float64", lambda: ProbSparseSelfAttention(8, 2)(torch.randn(1, 5, 8).double()),
        TypeError, "x must have the weights' dtype torch.float32, got torch.float64"),
    *[bad(f"Distilling d_model={v!r}", lambda v=v: Distilling(v), ValueError,
        f"d_model must be a positive int, got {v!r}")
      for v in (0, -1, 2.5)],
    bad("Distilling x 2-D", lambda: Distilling(4)(torch.randn(5, 4)), ValueError,
        "x must be a (batch, length, d_model) tensor, got shape (5, 4)"),
    bad("Distilling x narrow", lambda: Distilling(4)(torch.randn(1, 5, 3)), ValueError,
        "x must be (batch, length >= 1, d_model=4), got (1, 5, 3)"),
    bad("Distilling no steps", lambda: Distilling(4)(torch.randn(1, 0, 4)), ValueError,
        "x must be (batch, length >= 1, d_model=4), got (1, 0, 4)"),
    *[bad(f"InformerEncoder {k}={v!r}", lambda k=k, v=v: InformerEncoder(**{**dict(d_model=8, n_heads=2, d_ff=16,
                                                                                   n_layers=2), k: v}),
          ValueError, f"{k} must be a positive int, got {v!r}") for k, v in [("n_layers", 0), ("n_layers", -1),
                                                                           ("d_ff", 0)]],
    *[bad(f"synthetic_series n={v!r}", lambda v=v: synthetic_series(v), ValueError,
        f"n must be a positive int, got {v!r}")
      for v in (0, -5, 2.5, True, "10")],
    *[bad(f"synthetic_series seed={v!r}", lambda v=v: synthetic_series(10, v), ValueError,
        f"seed must be an int, got {v!r}")
      for v in ("a", 1.5, None)],
    *[bad(f"windows {k}={v!r}", lambda k=k, v=v: windows(S20, **{**dict(seq_len=5, pred_len=2), k: v}), ValueError,
          f"{k} must be a positive int, got {v!r}")
      for k, v in [("seq_len", 0), ("seq_len", -2), ("pred_len", 0), ("pred_len", -1), ("step", 0), ("step", True)]],
    bad("windows series list", lambda: windows(S20.tolist(), 5, 2), TypeError,
        "series must be a torch.Tensor, got list"),
    *[bad(f"{f.__name__} pred_len={v!r}", lambda f=f, v=v: f(X, v, 4) if f is seasonal_naive else f(X, v), ValueError,
          f"pred_len must be a positive int, got {v!r}") for f in (last_value, seasonal_naive) for v in (0, -1, 1.5)],
    bad("last_value x 1-D", lambda: last_value(X[0], 2), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (10,)"),
    bad("last_value empty windows", lambda: last_value(X[:, :0], 2), ValueError,
        "x must hold windows of at least one value, got shape (3, 0)"),
    bad("seasonal_naive x 1-D", lambda: seasonal_naive(X[0], 2, 4), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (10,)"),
    *[bad(f"LinearForecaster ridge={v!r}", lambda v=v: LinearForecaster(v), ValueError,
          f"ridge must be a finite number >= 0.0, got {v!r}") for v in (-1.0, NAN, INF, "0.1")],
    bad("fit x 1-D", lambda: LinearForecaster().fit(XF[:, 0], YF), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (30,)"),
    bad("fit y 1-D", lambda: LinearForecaster().fit(XF, YF[:, 0]), ValueError,
        "y must be a (batch, pred_len) tensor, got shape (30,)"),
    bad("fit rows differ", lambda: LinearForecaster().fit(XF, YF[:20]), ValueError,
        "x and y must hold the same number (>= 1) of windows, got 30 and 20"),
    bad("fit no windows", lambda: LinearForecaster().fit(XF[:0], YF[:0]), ValueError,
        "x and y must hold the same number (>= 1) of windows, got 0 and 0"),
    bad("fit NaN x", lambda: LinearForecaster().fit(row_nan(XF, 3), YF), ValueError,
        "x must be finite, got NaN or inf"),
    bad("fit inf y", lambda: LinearForecaster().fit(XF, YF.index_fill(0, torch.tensor([0]), INF)), ValueError,
        "y must be finite, got NaN or inf"),
    bad("fit too few windows without ridge", lambda: LinearForecaster(0.0).fit(XF[:3], YF[:3]), ValueError,
        "without a ridge, fitting 6 weights needs at least as many windows, got 3: give more windows or ridge > 0"),
    bad("fit collinear windows without ridge", lambda: LinearForecaster(0.0).fit(torch.ones(30, 5), YF), ValueError,
        "the windows are collinear and ridge is 0: the normal equations are singular; give ridge > 0"),
    bad("forecast before fit", lambda: LinearForecaster()(XF), RuntimeError, "call fit() first"),
    bad("forecast other width", lambda: LinearForecaster().fit(XF, YF)(XF[:, :4]), ValueError,
        "x must be (batch, seq_len=5) as fitted, got (30, 4)"),
    bad("forecast x 1-D", lambda: LinearForecaster().fit(XF, YF)(XF[0]), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (5,)"),
    bad("mse target list", lambda: mse(torch.zeros(1), [1.0]), TypeError, "target must be a torch.Tensor, got list"),
    *[case for f in (mse, mae) for case in (
        bad(f"{f.__name__} shapes differ", lambda f=f: f(torch.zeros(3, 1), torch.zeros(3, 4)), ValueError,
            "pred and target must have the same non-empty shape, got (3, 1) and (3, 4)"),
        bad(f"{f.__name__} empty", lambda f=f: f(torch.zeros(0, 2), torch.zeros(0, 2)), ValueError,
            "pred and target must have the same non-empty shape, got (0, 2) and (0, 2)"),
        bad(f"{f.__name__} list", lambda f=f: f([1.0], torch.zeros(1)), TypeError,
            "pred must be a torch.Tensor, got list"),
    )],
    bad("revin int", lambda: revin(torch.arange(10)[None]), TypeError,
        "x must be a floating-point tensor, got torch.int64"),
    bad("revin no values", lambda: revin(torch.zeros(2, 0)), ValueError,
        "x must hold windows of at least one value (B, T >= 1), got shape (2, 0)"),
    *[bad(f"revin eps={v!r}", lambda v=v: revin(torch.ones(2, 4), v), ValueError, f"eps must be a finite number > 0.0, "
          f"got {v!r}") for v in (0.0, -1e-5, NAN)],
    bad("revin_inverse stats of another batch", lambda: revin_inverse(torch.zeros(2, 4), revin(X)[1]), ValueError,
        "stats must be (mean, std) of shape (2, 1) for y (2, 4), got [(3, 1), (3, 1)]"),
    bad("revin_inverse stats broadcast", lambda: revin_inverse(torch.zeros(3, 4), (torch.zeros(1, 1), torch.ones(1,
        1))),
        ValueError, "stats must be (mean, std) of shape (3, 1) for y (3, 4), got [(1, 1), (1, 1)]"),
    bad("revin_inverse one tensor", lambda: revin_inverse(torch.zeros(3, 4), torch.zeros(3, 1)), TypeError,
        "stats must be the (mean, std) pair of tensors revin returned, got Tensor"),
    bad("revin_inverse y list", lambda: revin_inverse([[0.0]], revin(X)[1]), TypeError,
        "y must be a torch.Tensor, got list"),
    *[bad(f"top_lags k={v!r}", lambda v=v: top_lags(X, v), ValueError,
          f"k (lags, at most the window length) must be an int in [1, 10], got {v!r}") for v in (0, -1, 11, 2.5)],
    bad("top_lags no values", lambda: top_lags(torch.zeros(2, 0), 1), ValueError,
        "x must hold windows of at least one value (B, T >= 1), got shape (2, 0)"),
    bad("top_lags int", lambda: top_lags(torch.ones(2, 5, dtype=torch.long), 1), TypeError,
        "x must be a floating-point tensor, got torch.int64"),
    *[bad(f"series_prompt pred_len={v!r}", lambda v=v: series_prompt(X, v), ValueError,
          f"pred_len must be a positive int, got {v!r}") for v in (0, -5, 2.5)],
    bad("series_prompt n_lags past T", lambda: series_prompt(X, 4, n_lags=11), ValueError,
        "n_lags (at most the window length) must be an int in [1, 10], got 11"),
    bad("series_prompt description None", lambda: series_prompt(X, 4, None), TypeError,
        "description must be a str, got NoneType"),
    bad("series_prompt x 1-D", lambda: series_prompt(X[0], 4), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (10,)"),
    bad("PatchEmbedding d_model 0", lambda: PatchEmbedding(4, 2, 0), ValueError,
        "d_model must be a positive int, got 0"),
    bad("PatchEmbedding x 1-D", lambda: PatchEmbedding(4, 2, 8)(torch.randn(12)), ValueError,
        "x must be a (batch, seq_len) tensor, got shape (12,)"),
    bad("PatchEmbedding x float64", lambda: PatchEmbedding(4, 2, 8)(torch.randn(2, 12).double()), TypeError,
        "x must have the weights' dtype torch.float32, got torch.float64"),
    bad("PatchEmbedding x short", lambda: PatchEmbedding(4, 2, 8)(torch.randn(2, 3)), ValueError,
        "series of length 3 is shorter than patch_len=4"),
    *[bad(f"Reprogramming {k}={v!r}", lambda k=k, v=v: Reprogramming(**{**dict(d_model=8, n_heads=2, d_keys=4,
                                                                              d_llm=12), k: v}),
          ValueError, f"{k} must be a positive int, got {v!r}") for k, v in [("n_heads", 0), ("d_keys", 0),
                                                                           ("d_llm", -1), ("d_model", 2.0)]],
    bad("Reprogramming patches 2-D", lambda: Reprogramming(8, 2, 4, 12)(torch.randn(5, 8), torch.randn(6, 12)),
        ValueError, "patches must be a (batch, patches, d_model) tensor, got shape (5, 8)"),
    bad("Reprogramming patches narrow", lambda: Reprogramming(8, 2, 4, 12)(torch.randn(2, 5, 7), torch.randn(6, 12)),
        ValueError, "patches must be (batch, patches, d_model=8), got (2, 5, 7)"),
    bad("Reprogramming no prototypes", lambda: Reprogramming(8, 2, 4, 12)(torch.randn(2, 5, 8), torch.randn(0, 12)),
        ValueError, "prototypes must be (S >= 1, d_llm=12), got (0, 12)"),
    bad("Reprogramming prototypes narrow", lambda: Reprogramming(8, 2, 4, 12)(torch.randn(2, 5, 8), torch.randn(6, 11)),
        ValueError, "prototypes must be (S >= 1, d_llm=12), got (6, 11)"),
    bad("Reprogramming prototypes 1-D", lambda: Reprogramming(8, 2, 4, 12)(torch.randn(2, 5, 8), torch.randn(12)),
        ValueError, "prototypes must be a (prototypes, d_llm) tensor, got shape (12,)"),
    *[bad(f"TimeLLM {k}={v!r}", lambda k=k, v=v: TimeLLM(llama(), PromptTokenizer(), **sizes(**{k: v})), ValueError,
          message) for k, v, message in [
        ("seq_len", 4, "seq_len (at least patch_len) must be an int >= 8, got 4"),
        ("pred_len", 0, "pred_len must be a positive int, got 0"),
        ("n_heads", 32, "n_heads (at most d_ff) must be an int in [1, 16], got 32"),
        ("n_prototypes", 0, "n_prototypes must be a positive int, got 0"),
        ("n_words", 0, "n_words (at most the vocabulary) must be an int in [1, 300], got 0"),
        ("n_words", 301, "n_words (at most the vocabulary) must be an int in [1, 300], got 301"),
        ("n_layers", 4, "n_layers (at most the backbone's) must be an int in [1, 3], got 4"),
        ("n_layers", -1, "n_layers (at most the backbone's) must be an int in [1, 3], got -1"),
        ("d_ff", 33, "d_ff (channels kept of the backbone's width) must be an int in [1, 32], got 33"),
        ("patch_len", "8", "patch_len must be a positive int, got '8'"),
        ("patch_len", 0, "patch_len must be a positive int, got 0"),
    ]],
    bad("TimeLLM description int", lambda: TimeLLM(llama(), PromptTokenizer(), **sizes(description=5)), TypeError,
        "description must be a str, got int"),
    bad("TimeLLM backbone not a Transformer", lambda: TimeLLM(nn.Linear(2, 2), PromptTokenizer(), **TIMELLM), TypeError,
        "backbone must be an lmkit Transformer, got Linear"),
    bad("TimeLLM tokenizer without encode", lambda: TimeLLM(llama(), object(), **TIMELLM), TypeError,
        "tokenizer must have an encode(text) method, got object"),
    bad("TimeLLM x int", lambda: timellm()(torch.ones(2, 24, dtype=torch.long)), TypeError,
        "x must be a floating-point tensor, got torch.int64"),
    bad("TimeLLM x list", lambda: timellm()([[0.0] * 24]), TypeError, "x must be a torch.Tensor, got list"),
]

TIMESERIES_GOOD = [
    good("sample_keys for no queries", lambda: sample_keys(0, 5, 3).shape, lambda r: r == (0, 3)),
    good("sample_keys stay in range", lambda: sample_keys(50, 7, 9, gen(0)),
         lambda r: int(r.min()) >= 0 and int(r.max()) < 7 and r.shape == (50, 9)),
    good("sparsity_measure on every key", lambda: sparsity_measure(Q, Q, torch.arange(8).repeat(8, 1)),
         lambda r: torch.allclose(r, sparsity_measure(Q, Q), atol=1e-6)),
    good("prob_sparse of no rows", lambda: prob_sparse_attention(Q[:0], Q[:0], Q[:0]).shape,
         lambda r: r == (0, 3, 8, 4)),
    good("prob_sparse u = L is softmax", lambda: prob_sparse_attention(Q, Q, Q, u=8),
         lambda r: torch.allclose(r, torch.softmax(Q @ Q.transpose(-2, -1) / 2, -1) @ Q, atol=1e-5)),
    good("prob_sparse of one position", lambda: prob_sparse_attention(Q[:, :, :1], Q[:, :, :1], Q[:, :, :1]),
         lambda r: torch.allclose(r, Q[:, :, :1])),
    good("Distilling of one step", lambda: Distilling(4).eval()(torch.randn(2, 1, 4)).shape, lambda r: r == (2, 1, 4)),
    good("InformerEncoder halves twice", lambda: InformerEncoder(8, 2, 16, 3).eval()(torch.randn(2, 16, 8)).shape,
         lambda r: r == (2, 4, 8)),
    good("synthetic_series of one value", lambda: synthetic_series(1).shape, lambda r: r == (1,)),
    good("windows of exactly one pair", lambda: [t.tolist() for t in windows(S20[:7], 5, 2)],
         lambda r: r == [[[0, 1, 2, 3, 4]], [[5, 6]]]),
    good("seasonal_naive past a period", lambda: seasonal_naive(torch.arange(6.0)[None], 5, 2).tolist(),
         lambda r: r == [[4.0, 5.0, 4.0, 5.0, 4.0]]),
    good("last_value of one-value windows", lambda: last_value(X[:, :1], 3), lambda r: torch.equal(r, X[:,
        :1].repeat(1, 3))),
    good("fit float64 recovers a linear map", lambda: LinearForecaster(0.0).fit(XF.double(), (XF @ torch.ones(5, 2))
                                                                                .double())(XF),
         lambda r: torch.allclose(r, XF @ torch.ones(5, 2), atol=1e-4)),
    good("mse of two values", lambda: mse(torch.tensor([1.0, 3.0]), torch.zeros(2)), lambda r: r == 5.0),
    good("mae of two values", lambda: mae(torch.tensor([1.0, 3.0]), torch.zeros(2)), lambda r: r == 2.0),
    good("revin of a constant window", lambda: revin(torch.ones(2, 4))[0], lambda r: torch.equal(r, torch.zeros(2, 4))),
    good("revin of one value", lambda: revin(torch.tensor([[5.0]]))[0], lambda r: torch.equal(r, torch.zeros(1, 1))),
    good("revin NaN row stays in its row", lambda: revin(torch.tensor([[1.0, NAN], [1.0, 2.0]]))[0],
         lambda r: nan_only_in(r, 0)),
    good("revin round trip", lambda: revin_inverse(*revin(X)), lambda r: torch.allclose(r, X, atol=1e-5)),
    good("top_lags: lag 0 wins", lambda: top_lags(X, 1).tolist(), lambda r: r == [[0], [0], [0]]),
    good("top_lags of every lag", lambda: top_lags(X, 10).sort(-1).values, lambda r: torch.equal(
        r, torch.arange(10).expand(3, 10))),
    good("series_prompt statistics", lambda: series_prompt(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 2, "d", 1)[0],
         lambda r: "forecast the next 2 steps given the previous 4 steps" in r and "upward" in r and "[0]" in r),
    good("PatchEmbedding patch count", lambda: PatchEmbedding(4, 2, 8)(torch.randn(2, 12)).shape,
         lambda r: r == (2, PatchEmbedding(4, 2, 8).n_patches(12), 8)),
    good("TimeLLM n_layers = all of them", lambda: TimeLLM(llama(), PromptTokenizer(), **sizes(n_layers=3)).n_layers,
         lambda r: r == 3),
    good("TimeLLM batch of one", lambda: timellm()(torch.randn(1, 24)).shape, lambda r: r == (1, 6)),
    good("TimeLLM NaN window stays in its row", lambda: timellm()(row_nan(torch.randn(2, 24), 1)),
         lambda r: nan_only_in(r, 1)),
]


@pytest.mark.parametrize("call, error, message", TIMESERIES_BAD)
def test_timeseries_bad_input_is_named(call, error, message):
    run_bad(call, error, message)


@pytest.mark.parametrize("call, check", TIMESERIES_GOOD)
def test_timeseries_edge_input_gives_the_right_result(call, check):
    with torch.no_grad():
        run_good(call, check)


# ====================================================================================== lmkit.quant.fast_linear

WQ = torch.randn(16, 32, generator=gen(17))


@functools.cache
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(32, 16)


@functools.cache
def int8(threshold: float = 0.0) -> Int8Linear:
    return Int8Linear.from_linear(linear(), threshold=threshold)


@functools.cache
def bf16() -> BF16Linear:
    torch.manual_seed(0)
    return BF16Linear.from_linear(nn.Linear(32, 16).to(torch.bfloat16))


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=101, d_model=32, n_layers=1, n_heads=4, d_ff=48,
                                         tie_embeddings=True)).eval()


def with_nan_weight() -> Transformer:
    model = tiny()
    with torch.no_grad():
        model.blocks[0].ffn.down_proj.weight[0, 0] = NAN
    return model


def reload_scale(scale: torch.Tensor) -> None:
    copy.deepcopy(int8()).load_state_dict({**int8().state_dict(), "scale": scale})


SCALE = "scale must hold one finite row absmax >= 0 per output row, got NaN, inf or a negative value"
EMPTY = "weight is empty (shape {}): there are no values to take a scale from"
X_WIDTH = "x must be (..., in_features=32), got shape {}"

FAST_LINEAR_BAD = [
    bad("from_weight list", lambda: Int8Linear.from_weight(WQ.tolist()), TypeError,
        "weight must be a torch.Tensor, got list"),
    bad("from_weight 1-D", lambda: Int8Linear.from_weight(WQ[0]), ValueError,
        "weight must be a 2-D (out, in) matrix, got shape (32,)"),
    bad("from_weight (16, 0)", lambda: Int8Linear.from_weight(WQ[:, :0]), ValueError, EMPTY.format((16, 0))),
    bad("from_weight (0, 32)", lambda: Int8Linear.from_weight(WQ[:0]), ValueError, EMPTY.format((0, 32))),
    bad("from_weight NaN", lambda: Int8Linear.from_weight(row_nan(WQ, 3, 1)), ValueError,
        "weight contains NaN or inf; quantization needs finite values"),
    bad("from_weight inf", lambda: Int8Linear.from_weight(WQ.index_fill(1, torch.tensor([3]), -INF)), ValueError,
        "weight contains NaN or inf; quantization needs finite values"),
    bad("from_weight int", lambda: Int8Linear.from_weight(WQ.long()), TypeError,
        "weight must be a floating-point tensor, got torch.int64"),
    bad("from_weight bias of 15", lambda: Int8Linear.from_weight(WQ, torch.zeros(15)), ValueError,
        "bias must be (out,) = (16,), got (15,)"),
    bad("from_weight bias (1, 16)", lambda: Int8Linear.from_weight(WQ, torch.zeros(1, 16)), ValueError,
        "bias must be (out,) = (16,), got (1, 16)"),
    bad("from_weight bias list", lambda: Int8Linear.from_weight(WQ, [0.0] * 16), TypeError,
        "bias must be a torch.Tensor, got list"),
    *[bad(f"from_weight threshold={v!r}", lambda v=v: Int8Linear.from_weight(WQ, threshold=v), ValueError,
          f"threshold must be a finite number >= 0.0, got {v!r}") for v in (-1.0, NAN, INF, "6", True)],
    bad("Int8Linear codes list", lambda: Int8Linear(WQ.tolist(), torch.ones(16)), TypeError,
        "codes must be a torch.Tensor, got list"),
    bad("Int8Linear codes (16, 0)", lambda: Int8Linear(torch.zeros(16, 0, dtype=torch.int8), torch.ones(16)),
        ValueError,
        "codes must be a 2-D int8 (out, in) tensor with out, in >= 1, got torch.int8 (16, 0)"),
    bad("Int8Linear codes float", lambda: Int8Linear(WQ, torch.ones(16)), ValueError,
        "codes must be a 2-D int8 (out, in) tensor with out, in >= 1, got torch.float32 (16, 32)"),
    bad("Int8Linear scale list", lambda: Int8Linear(WQ.to(torch.int8), [1.0] * 16), TypeError,
        "scale must be a torch.Tensor, got list"),
    bad("Int8Linear scale NaN", lambda: Int8Linear(WQ.to(torch.int8), torch.full((16,), NAN)), ValueError, SCALE),
    bad("Int8Linear scale negative", lambda: Int8Linear(WQ.to(torch.int8), -torch.ones(16)), ValueError, SCALE),
    bad("from_linear of a Conv1d", lambda: Int8Linear.from_linear(nn.Conv1d(3, 3, 1)), TypeError,
        "linear must be an nn.Linear, got Conv1d"),
    bad("from_linear of a tensor", lambda: Int8Linear.from_linear(WQ), TypeError,
        "linear must be an nn.Linear, got Tensor"),
    *[case for threshold in (0.0, 2.0) for case in (
        bad(f"int8 t={threshold} x too narrow", lambda t=threshold: int8(t)(torch.randn(4, 16)), ValueError,
            X_WIDTH.format((4, 16))),
        bad(f"int8 t={threshold} one row too narrow", lambda t=threshold: int8(t)(torch.randn(1, 31)), ValueError,
            X_WIDTH.format((1, 31))),
        bad(f"int8 t={threshold} x that reshapes", lambda t=threshold: int8(t)(torch.randn(2, 64)), ValueError,
            X_WIDTH.format((2, 64))),
        bad(f"int8 t={threshold} x int", lambda t=threshold: int8(t)(torch.ones(2, 32, dtype=torch.long)), TypeError,
            "x must be a floating-point tensor, got torch.int64"),
        bad(f"int8 t={threshold} x 0-d", lambda t=threshold: int8(t)(torch.tensor(1.0)), ValueError,
            X_WIDTH.format(())),
        bad(f"int8 t={threshold} x list", lambda t=threshold: int8(t)([[0.0] * 32]), TypeError,
            "x must be a torch.Tensor, got list"),
    )],
    bad("int8 reload NaN scale", lambda: reload_scale(torch.full((16,), NAN)), ValueError, SCALE),
    bad("int8 reload negative scale", lambda: reload_scale(-int8().scale), ValueError, SCALE),
    bad("BF16Linear weight list", lambda: BF16Linear(WQ.tolist()), TypeError,
        "weight must be a torch.Tensor, got list"),
    bad("BF16Linear bias float32", lambda: BF16Linear(WQ.bfloat16(), torch.zeros(16)), ValueError,
        "bias must be (out,) = (16,) in the weight's dtype torch.bfloat16, got (16,) torch.float32"),
    bad("BF16Linear bias of 15", lambda: BF16Linear(WQ.bfloat16(), torch.zeros(15).bfloat16()), ValueError,
        "bias must be (out,) = (16,) in the weight's dtype torch.bfloat16, got (15,) torch.bfloat16"),
    bad("BF16Linear from_linear of a tensor", lambda: BF16Linear.from_linear(WQ), TypeError,
        "linear must be an nn.Linear, got Tensor"),
    *[case for grad in (False, True) for case in (
        bad(f"bf16 grad={grad} x too narrow", lambda g=grad: run_bf16(torch.randn(1, 16).bfloat16(), g), ValueError,
            X_WIDTH.format((1, 16))),
        bad(f"bf16 grad={grad} one float32 row", lambda g=grad: run_bf16(torch.randn(1, 32), g), TypeError,
            "x must have the weight's dtype torch.bfloat16, got torch.float32"),
        bad(f"bf16 grad={grad} float32 rows", lambda g=grad: run_bf16(torch.randn(3, 32), g), TypeError,
            "x must have the weight's dtype torch.bfloat16, got torch.float32"),
        bad(f"bf16 grad={grad} x 0-d", lambda g=grad: run_bf16(torch.tensor(1.0).bfloat16(), g), ValueError,
            X_WIDTH.format(())),
        bad(f"bf16 grad={grad} x list", lambda g=grad: run_bf16([[0.0] * 32], g), TypeError,
            "x must be a torch.Tensor, got list"),
    )],
    bad("to_int8 of a str", lambda: to_int8("model"), TypeError, "model must be an nn.Module, got str"),
    bad("to_bf16 of None", lambda: to_bf16(None), TypeError, "model must be an nn.Module, got NoneType"),
    bad("fuse_projections of a list", lambda: fuse_projections([1, 2]), TypeError,
        "model must be an nn.Module, got list"),
    bad("prepare_for_decoding of a list", lambda: prepare_for_decoding([1, 2]), TypeError,
        "model must be an nn.Module, got list"),
    bad("to_int8 threshold -1", lambda: to_int8(tiny(), -1.0), ValueError,
        "threshold must be a finite number >= 0.0, got -1.0"),
    bad("to_int8 head_threshold NaN", lambda: to_int8(tiny(), head_threshold=NAN), ValueError,
        "head_threshold must be a finite number >= 0.0, got nan"),
    bad("to_int8 NaN weight names the layer", lambda: to_int8(with_nan_weight()), ValueError,
        "blocks.0.ffn.down_proj: weight contains NaN or inf; quantization needs finite values"),
    bad("to_int8 of a bf16 model", lambda: to_int8(to_bf16(tiny())), ValueError,
        "model already holds BF16Linear layers: convert the float model instead"),
    bad("to_bf16 of an int8 model", lambda: to_bf16(to_int8(tiny())), ValueError,
        "model already holds Int8Linear layers: convert the float model instead"),
    bad("prepare int8, then bfloat16", lambda: prepare_for_decoding(prepare_for_decoding(tiny()), "bfloat16"),
        ValueError,
        "model already holds Int8Linear layers: convert the float model instead"),
]


def run_bf16(x, grad: bool):
    with torch.set_grad_enabled(grad):
        return bf16()(x)


def nan_weight_leaves_model_float() -> bool:
    model = with_nan_weight()
    with pytest.raises(ValueError):
        to_int8(model)
    return not any(isinstance(m, Int8Linear) for m in model.modules())


def reloaded_codes_are_used() -> bool:
    a, b = Int8Linear.from_weight(torch.randn(16, 32, generator=gen(18))), Int8Linear.from_weight(WQ)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 32, generator=gen(19))
    return torch.equal(a(x[:1]), b(x[:1])) and torch.equal(a(x), b(x))


def bf16_moved_to_float32() -> float:
    layer = copy.deepcopy(bf16()).to(torch.float32)
    x = torch.randn(1, 32, generator=gen(20))
    return (layer(x) - F.linear(x, layer.weight, layer.bias)).abs().max().item()


@torch.no_grad()
def bf16_nan_weight() -> torch.Tensor:
    lin = nn.Linear(32, 16).to(torch.bfloat16)
    lin.weight[3, 5] = NAN
    return BF16Linear.from_linear(lin)(torch.randn(2, 32, generator=gen(21)).bfloat16())


def bf16_reloaded_from_float32() -> bool:
    layer = copy.deepcopy(bf16())
    layer.load_state_dict({k: 2 * v.float() for k, v in bf16().state_dict().items()})
    x = torch.randn(1, 32, generator=gen(22)).bfloat16()
    return layer.weight.dtype == torch.bfloat16 and torch.equal(layer(x), F.linear(x, 2 * bf16().weight,
                                                                                  2 * bf16().bias))


FAST_LINEAR_GOOD = [
    *[case for threshold in (0.0, 2.0) for case in (
        good(f"int8 t={threshold} empty batch", lambda t=threshold: int8(t)(torch.randn(0, 32)).shape,
             lambda r: r == (0, 16)),
        good(f"int8 t={threshold} empty 3-D batch", lambda t=threshold: int8(t)(torch.randn(2, 0, 32)).shape,
             lambda r: r == (2, 0, 16)),
        good(f"int8 t={threshold} 1-D x", lambda t=threshold: int8(t)(torch.ones(32)),
             lambda r: r.shape == (16,) and torch.allclose(r, linear()(torch.ones(32)), atol=0.05)),
        good(f"int8 t={threshold} NaN row stays in its row", lambda t=threshold: int8(t)(row_nan(torch.randn(3, 32),
            1)),
             lambda r: nan_only_in(r, 1)),
        good(f"int8 t={threshold} NaN single row", lambda t=threshold: int8(t)(torch.full((1, 32), NAN)),
             lambda r: bool(r.isnan().all())),
        good(f"int8 t={threshold} zero row is the bias", lambda t=threshold: int8(t)(torch.zeros(1, 32)),
             lambda r: torch.allclose(r, linear().bias[None])),
        good(f"int8 t={threshold} float64 in, float64 out", lambda t=threshold: int8(t)(torch.randn(3, 32).double()),
             lambda r: r.dtype == torch.float64 and r.shape == (3, 16)),
    )],
    good("from_weight of a bfloat16 weight", lambda: Int8Linear.from_weight(WQ.bfloat16()).dequantized_weight(),
         lambda r: torch.allclose(r, WQ.bfloat16().float(), atol=float(WQ.abs().max()) / 127)),
    good("int8 NaN bias stays in its channel", lambda: Int8Linear.from_weight(
        WQ, row_nan(torch.zeros(16), 3))(torch.randn(2, 32)), lambda r: nan_only_in(r, 3, dim=1)),
    good("int8 .to(float64)", lambda: copy.deepcopy(int8()).to(torch.float64)(torch.ones(1, 32)),
         lambda r: torch.allclose(r, int8()(torch.ones(1, 32)), atol=1e-5)),
    good("int8 .to(cpu) keeps its FBGEMM copy", lambda: copy.deepcopy(int8()).to("cpu").packed is None,
         lambda r: r is (int8().packed is None)),
    good("int8 reloaded codes are used", reloaded_codes_are_used, lambda r: r),
    good("bf16 empty batch", lambda: run_bf16(torch.randn(0, 32).bfloat16(), False).shape, lambda r: r == (0, 16)),
    good("bf16 1-D x", lambda: run_bf16(torch.ones(32).bfloat16(), False),
         lambda r: torch.equal(r, F.linear(torch.ones(32).bfloat16(), bf16().weight, bf16().bias))),
    good("bf16 .to(float32)", bf16_moved_to_float32, lambda r: r < 1e-5),
    good("bf16 NaN weight stays in its channel", bf16_nan_weight, lambda r: nan_only_in(r, 3, dim=1)),
    good("bf16 reload from float32 tensors", bf16_reloaded_from_float32, lambda r: r),
    good("to_int8 NaN weight leaves the model float", nan_weight_leaves_model_float, lambda r: r),
    good("prepare_for_decoding twice", lambda: prepare_for_decoding(prepare_for_decoding(tiny(), "float32"), "int8"),
         lambda r: isinstance(r.lm_head, Int8Linear) and r.blocks[0].attn.q_proj is None),
    good("fuse_projections twice changes nothing", lambda: fuse_projections(fuse_projections(tiny()))(
        torch.arange(6)[None]).logits, lambda r: torch.allclose(r, tiny()(torch.arange(6)[None]).logits, atol=1e-5)),
    good("to_int8 twice is a no-op", lambda: to_int8(to_int8(tiny(), 3.0)).lm_head.threshold, lambda r: r == 3.0),
    good("int8 model on no rows", lambda: to_int8(tiny())(torch.zeros(0, 4, dtype=torch.long)).logits.shape,
         lambda r: r == (0, 4, 101)),
]


@pytest.mark.parametrize("call, error, message", FAST_LINEAR_BAD)
def test_fast_linear_bad_input_is_named(call, error, message):
    run_bad(call, error, message)


@pytest.mark.parametrize("call, check", FAST_LINEAR_GOOD)
def test_fast_linear_edge_input_gives_the_right_result(call, check):
    with torch.no_grad():
        run_good(call, check)


def test_a_reload_of_another_shape_is_pytorchs_named_error():
    with pytest.raises(RuntimeError,
        match=r"size mismatch for codes: copying a param with shape torch.Size\(\[8, 32\]\)"):
        copy.deepcopy(int8()).load_state_dict(Int8Linear.from_linear(nn.Linear(32, 8)).state_dict())
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "codes", "scale"'):
        copy.deepcopy(int8()).load_state_dict(linear().state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_int8_on_cuda_names_shapes_its_kernel_cannot_take():
    layer = Int8Linear.from_weight(torch.randn(12, 32)).to("cuda")  # N = 12: not a multiple of 8
    assert layer.packed is None  # no FBGEMM copy off the CPU
    with pytest.raises(ValueError, match=lit("torch._int_mm on CUDA needs K and N multiples of 8, got K=32, N=12")):
        layer(torch.randn(1, 32, device="cuda"))
    good_layer = Int8Linear.from_weight(torch.randn(16, 32)).to("cuda")
    x = torch.randn(3, 32, device="cuda")
    torch.testing.assert_close(good_layer(x).cpu(), good_layer.cpu()(x.cpu()), rtol=1e-5, atol=1e-5)
