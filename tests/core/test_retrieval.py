"""lmkit.retrieval: chunking, the exact index against sentence-transformers' semantic_search, the question set,
prompt assembly, the scoring rule, and (slow) the real MiniLM retriever and SmolLM2 answers."""

import pytest
import torch

from lmkit.book.experiments.rag_questions import QUESTIONS
from lmkit.data import pydoc_topics
from lmkit.retrieval import (
    Chunk,
    ExactIndex,
    build_prompt,
    chunk_documents,
    chunk_words,
    covers,
    evidence_spans,
    is_correct,
    recall_at_k,
)


def test_chunk_words_covers_every_word_with_the_overlap():
    words = [f"w{i}" for i in range(23)]
    spans = chunk_words(words, size=8, overlap=3)
    assert spans[0] == (0, 8) and spans[-1][1] == 23
    assert all(b - a == 8 for a, b in spans[:-1])
    assert all(a2 == b1 - 3 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
    assert chunk_words(words[:5], size=8) == [(0, 5)] and chunk_words([], size=8) == []


@pytest.mark.parametrize("size, overlap", [(0, 0), (4, 4), (4, -1), (2.5, 0), (True, 0)])
def test_chunk_words_rejects_bad_sizes(size, overlap):
    with pytest.raises(ValueError):
        chunk_words(["a", "b"], size, overlap)


def test_chunk_documents_keeps_document_and_span():
    chunks = chunk_documents({"a": "one two  three\nfour five six seven", "b": "x y"}, size=4, overlap=1)
    assert [c.text for c in chunks] == ["one two three four", "four five six seven", "x y"]
    assert chunks[1] == Chunk("a", 3, 7, "four five six seven")
    with pytest.raises(ValueError):
        chunk_documents({}, 4)


def test_evidence_spans_and_covers():
    docs = {"d": "alpha beta gamma. delta epsilon", "e": "beta gamma. zeta"}
    spans = evidence_spans(docs, "beta gamma")  # ends inside the word "gamma."
    assert spans == [("d", 1, 3), ("e", 0, 2)]
    assert covers(Chunk("d", 0, 2, ""), spans)  # holds "beta": half of the evidence
    assert not covers(Chunk("d", 3, 5, ""), spans)
    assert covers(Chunk("e", 0, 1, ""), spans) and not covers(Chunk("e", 0, 1, ""), spans, fraction=0.75)


def test_question_set_has_40_plus_questions_whose_gold_passages_exist():
    docs = pydoc_topics(4000)
    assert len(QUESTIONS) >= 40
    assert len({q["question"] for q in QUESTIONS}) == len(QUESTIONS)
    for q in QUESTIONS:
        spans = evidence_spans(docs, q["evidence"])
        assert q["topic"] in {doc for doc, _, _ in spans}, f"evidence not found in topic {q['topic']!r}"
        assert q["answers"] and all(isinstance(a, str) and a for a in q["answers"])
        assert not is_correct(q["question"], q["answers"], q["question"]), "echoing the question would score"


def test_exact_index_ranks_like_sentence_transformers_semantic_search():
    from sentence_transformers.util import semantic_search

    g = torch.Generator().manual_seed(0)
    corpus, queries = torch.randn(700, 48, generator=g), torch.randn(30, 48, generator=g)
    scores, ids = ExactIndex(corpus).search(queries, k=10)
    reference = semantic_search(queries, corpus, top_k=10)
    assert ids.tolist() == [[hit["corpus_id"] for hit in hits] for hits in reference]
    expected = torch.tensor([[hit["score"] for hit in hits] for hits in reference])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


def test_exact_index_checks_its_input():
    index = ExactIndex(torch.eye(4))
    assert index.search(torch.ones(4), k=10)[1].shape == (1, 4)  # k capped at the index size
    with pytest.raises(ValueError):
        index.search(torch.ones(3), k=1)
    with pytest.raises(ValueError):
        index.search(torch.ones(4), k=0)
    with pytest.raises(ValueError):
        ExactIndex(torch.ones(3, dtype=torch.long))


def test_recall_at_k():
    ranked = [[False, True, False], [True, False, False], [False, False, False]]
    assert recall_at_k(ranked, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        recall_at_k([], 1)


@pytest.mark.parametrize("text, answers, ok", [
    ("It raises an AssertionError.", ["AssertionError"], True),
    ("assertionerror", ["AssertionError"], True),
    ("Nonetheless it works", ["None"], False),
    ("The value is -1.", ["-1"], True),
    ("x is __dict__.", ["__dict__"], True),
    ("x is __dict__s", ["__dict__"], False),
    ("the last one", ["first", "last"], True),
])
def test_scoring_rule_is_a_whole_token_match(text, answers, ok):
    assert is_correct(text, answers) is ok


def test_scoring_ignores_echoes_of_the_question():
    question = "What is the value of -1**2?"
    assert not is_correct("The value of -1**2 is", ["-1"], question)
    assert is_correct("-1**2 gives -1.", ["-1"], question)
    assert is_correct("-1**2", ["-1"])  # without the question, the echo would count


def test_prompt_puts_numbered_passages_before_the_question():
    prompt = build_prompt("Why?", ["first passage", "second passage"])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert prompt.index("[1] first passage") < prompt.index("[2] second passage") < prompt.index("Question: Why?")
    assert "Context" not in build_prompt("Why?")


@pytest.mark.slow
def test_retriever_on_real_minilm_matches_semantic_search_and_finds_gold(minilm_model, minilm_tokenizer):
    from sentence_transformers.util import semantic_search

    from lmkit.retrieval import Retriever

    docs = {k: v for k, v in pydoc_topics(4000).items() if k in ("assert", "break", "pass", "power", "del", "lambda")}
    chunks = chunk_documents(docs, size=64, overlap=8)
    retriever = Retriever(minilm_model, minilm_tokenizer, chunks)
    questions = [q for q in QUESTIONS if q["topic"] in docs]
    query_vectors = retriever.embed_queries([q["question"] for q in questions])
    _, ids = retriever.index.search(query_vectors, k=5)
    reference = semantic_search(query_vectors, retriever.index.vectors, top_k=5)
    assert ids.tolist() == [[hit["corpus_id"] for hit in hits] for hits in reference]
    hits = [covers(retriever.retrieve(q["question"], 3)[0], evidence_spans(docs, q["evidence"])) for q in questions]
    assert sum(hits) >= 0.6 * len(hits)


@pytest.mark.slow
def test_smollm2_answers_from_the_gold_passage(smollm2_model, smollm2_tokenizer):
    from lmkit.retrieval import answer

    q = next(q for q in QUESTIONS if q["answers"] == ["-O"])
    closed = answer(smollm2_model, smollm2_tokenizer, q["question"], max_new_tokens=16)
    text = answer(smollm2_model, smollm2_tokenizer, q["question"], [pydoc_topics()["assert"]], max_new_tokens=16)
    assert "<|im_end|>" not in text and is_correct(text, q["answers"]) and not is_correct(closed, q["answers"]), text
