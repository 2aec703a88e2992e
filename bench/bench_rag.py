"""Retrieval-augmented generation on Python's help() topics: recall@k vs chunk size, and SmolLM2's answer accuracy.

    python bench/bench_rag.py [--threads 1] [--new 16] [--k 3] [--sizes 32 64 128 256] [--part all]

Retrieval (all-MiniLM-L6-v2 through lmkit's loader, exact cosine top-k): recall@1/3/5/10 of the book's question set
(:data:`lmkit.book.experiments.rag_questions.QUESTIONS`)
for each chunk size (words, overlap = size / 8) over the chapter's corpus (the 53
help() topics under 4,000 characters), and at 128 words over all 79 topics (more distractors, and the long topics
that repeat the short ones). Answering (SmolLM2-135M-Instruct, lmkit's float32 model, greedy, at most ``--new``
tokens): each question with no context (closed book), with the top ``--k`` retrieved chunks (128 words), and with the
gold chunk (the 128-word chunk of the gold topic that holds the most of the evidence: the ceiling). Scoring rule:
:func:`lmkit.retrieval.is_correct` (an accepted answer string appears in the reply as a whole token,
case-insensitive). Writes ``lmkit/book/results/rag.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lmkit.book import results as book_results
from lmkit.book.experiments.rag_questions import QUESTIONS
from lmkit.data import pydoc_topics
from lmkit.loaders.minilm import load_minilm
from lmkit.loaders.smollm2 import load_smollm2
from lmkit.retrieval import (
    Retriever,
    answer,
    chunk_documents,
    covers,
    evidence_spans,
    is_correct,
    recall_at_k,
)
from lmkit.tokenizers import load_minilm_tokenizer, load_smollm2_tokenizer

RESULTS = book_results.path("rag")
KS = (1, 3, 5, 10)


def retrieval_run(encoder, tokenizer, docs: dict[str, str], size: int) -> tuple[Retriever, list[list[bool]], dict]:
    chunks = chunk_documents(docs, size, size // 8)
    start = time.perf_counter()
    retriever = Retriever(encoder, tokenizer, chunks)
    embed_s = time.perf_counter() - start
    _, ids = retriever.rank([q["question"] for q in QUESTIONS], max(KS))
    ranked = [[covers(chunks[i], evidence_spans(docs, q["evidence"])) for i in row]
              for q, row in zip(QUESTIONS, ids.tolist(), strict=True)]
    row = {"chunk_words": size, "overlap": size // 8, "chunks": len(chunks), "embed_s": round(embed_s, 1),
           **{f"recall@{k}": round(recall_at_k(ranked, k), 3) for k in KS}}
    return retriever, ranked, row


def gold_chunk(docs: dict[str, str], chunks, q) -> str:
    spans = [s for s in evidence_spans(docs, q["evidence"]) if s[0] == q["topic"]]
    _, a, b = spans[0]
    own = [c for c in chunks if c.doc == q["topic"]]
    return max(own, key=lambda c: min(b, c.end) - max(a, c.start)).text


def answering_run(retriever, ranked, docs, k: int, new: int, save=None) -> dict:
    lm, bpe = load_smollm2(), load_smollm2_tokenizer()
    per_question, start = [], time.perf_counter()
    for q, hits in zip(QUESTIONS, ranked, strict=True):
        passages = [c.text for c in retriever.retrieve(q["question"], k)]
        replies = {
            "closed book": answer(lm, bpe, q["question"], (), new),
            f"top-{k} retrieved": answer(lm, bpe, q["question"], passages, new),
            "gold passage": answer(lm, bpe, q["question"], [gold_chunk(docs, retriever.chunks, q)], new),
        }
        correct = {name: is_correct(reply, q["answers"], q["question"]) for name, reply in replies.items()}
        per_question.append({"question": q["question"], "answers": q["answers"], "retrieved_gold": any(hits[:k]),
                             "replies": replies, "correct": correct})
        print(len(per_question), q["question"], replies, correct, flush=True)
        if save is not None:
            save(summarize(per_question, k, new, time.perf_counter() - start))
    return summarize(per_question, k, new, time.perf_counter() - start)


def summarize(per_question: list[dict], k: int, new: int, seconds: float) -> dict:
    conditions = list(per_question[0]["replies"])
    hit = [p for p in per_question if p["retrieved_gold"]]
    return {
        "answering": {
            "model": "SmolLM2-135M-Instruct (lmkit float32, greedy)", "max_new_tokens": new, "k": k,
            "chunk_words": 128,
            "scoring": "an accepted answer appears in the reply as a whole token, case-insensitive, echoes of the "
                       "question's own words not counted",
            "accuracy": {c: round(sum(p["correct"][c] for p in per_question) / len(per_question), 3)
                         for c in conditions},
            "accuracy_when_retrieval_hit": round(sum(p["correct"][conditions[1]] for p in hit) / max(len(hit), 1), 3),
            "retrieval_hits": len(hit), "seconds": round(seconds, 1), "answered": len(per_question),
        },
        "per_question": per_question,
    }


def save(part: dict, questions: int) -> None:
    """Merge ``part`` into the results file (the parts of the benchmark can run separately)."""
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if old.get("questions") != questions:  # another question set: start afresh
        old = {}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({**old, **part}, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--part", choices=["all", "sweep", "all-topics", "answers"], default="all",
                        help="run one part only (each merges its numbers into the results file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    encoder, wp = load_minilm(), load_minilm_tokenizer()
    short, full = pydoc_topics(4000), pydoc_topics()
    n = len(QUESTIONS)
    save({
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), shared with other jobs",
        "questions": n,
        "corpus": {"chapter": {"topics": len(short), "characters": sum(map(len, short.values()))},
                   "all": {"topics": len(full), "characters": sum(map(len, full.values()))}},
    }, n)
    if args.part in ("all", "sweep"):
        sweep = []
        for size in args.sizes:
            sweep.append(retrieval_run(encoder, wp, short, size)[2])
            print(sweep[-1], flush=True)
        save({"recall_vs_chunk_size": sweep}, n)
    if args.part in ("all", "all-topics"):
        row = retrieval_run(encoder, wp, full, 128)[2]
        print("all topics", row, flush=True)
        save({"recall_all_topics_128": row}, n)
    if args.part in ("all", "answers"):
        retriever, ranked, _ = retrieval_run(encoder, wp, short, 128)
        result = answering_run(retriever, ranked, short, args.k, args.new, save=lambda part: save(part, n))
        save(result, n)
        print(json.dumps(result["answering"], indent=1))


if __name__ == "__main__":
    main()
