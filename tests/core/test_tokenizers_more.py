"""Unigram, word-level and character-level tokenizers against HF `tokenizers` and brute force."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmkit import data
from lmkit.tokenizers.char import CharTokenizer
from lmkit.tokenizers.unigram import Unigram, expected_counts, m_step, metaspace_split, viterbi
from lmkit.tokenizers.word import WordTokenizer

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import models, pre_tokenizers, trainers  # noqa: E402

TRAIN = data.pydoc_text()[:60_000]
HELD_OUT = data.split_text(data.pydoc_text())[1][:30_000]
HARD = ["héllo wörld 😀 日本語  spaces\n\nnewline\tTab", "qqqq zzzz ΣΑΣ ǅ", "  leading", "trailing  ", "", " "]
METASPACE = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)


@pytest.fixture(scope="module")
def unigram() -> Unigram:
    return Unigram.train(TRAIN, 500)


@pytest.mark.parametrize("text", HARD + ["a  b", "hello world\nfoo"])
def test_metaspace_split_matches_hf(text):
    assert metaspace_split(text) == [p for p, _ in METASPACE.pre_tokenize_str(text)]


def test_unigram_viterbi_matches_hf_unigram_model(unigram):
    """Same pieces and scores in HF's Unigram model ⇒ the same segmentation, unknown characters included."""
    hf = tokenizers.Tokenizer(models.Unigram(unigram.pieces, unk_id=0, byte_fallback=False))
    hf.pre_tokenizer = METASPACE
    hf.decoder = tokenizers.decoders.Metaspace()
    for text in [HELD_OUT, *HARD]:
        ids = unigram.encode(text)
        assert ids == hf.encode(text).ids, text[:30]
        assert unigram.decode(ids) == hf.decode(ids)


def test_viterbi_is_the_best_segmentation_by_brute_force(unigram):
    scores = dict(unigram.pieces[1:])
    for word in ["▁tokenization", "▁statements", "▁unpacking", "▁__init__"]:
        best = -math.inf
        for cuts in itertools.product([0, 1], repeat=len(word) - 1):  # every segmentation
            parts, start = [], 0
            for i, cut in enumerate(cuts, 1):
                if cut:
                    parts.append(word[start:i])
                    start = i
            parts.append(word[start:])
            if all(p in scores for p in parts):
                best = max(best, sum(scores[p] for p in parts))
        found = viterbi(word, scores, 16, unigram.unk_score)
        assert sum(scores[p] for p, _ in found) == pytest.approx(best)


def test_unigram_compresses_like_hf_unigram_trainer(unigram):
    """HF's UnigramTrainer (SentencePiece's algorithm) on the same corpus and vocabulary size: the
    held-out text must take about as many tokens (within 10%) with lmkit's vocabulary."""
    hf = tokenizers.Tokenizer(models.Unigram())
    hf.pre_tokenizer = METASPACE
    trainer = trainers.UnigramTrainer(vocab_size=500, unk_token="<unk>", special_tokens=["<unk>"], show_progress=False)
    hf.train_from_iterator([TRAIN], trainer)
    ours, ref = len(unigram.encode(HELD_OUT)), len(hf.encode(HELD_OUT).ids)
    assert unigram.vocab_size == hf.get_vocab_size() == 500
    assert ours < 1.1 * ref


def test_em_step_does_not_decrease_likelihood(unigram):
    words = {w: 1 for w in metaspace_split(TRAIN[:5000])}
    scores = dict(unigram.pieces[1:])
    chars = {c for w in words for c in w}
    before_counts, before = expected_counts(words, scores, 16)
    _, after = expected_counts(words, m_step(before_counts, chars, min_count=0.0), 16)
    assert after >= before - 1e-6


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=sorted(set(TRAIN) - {"▁"})))
def test_unigram_roundtrip_within_alphabet(unigram, s):
    """Lossless, except one leading space: like HF's Metaspace, "▁" is only prepended when the text does
    not start with a space already, so " x" and "x" both become "▁x"."""
    assert unigram.decode(unigram.encode(s)) == (s[1:] if s.startswith(" ") else s)


def test_unigram_save_load_and_errors(unigram, tmp_path):
    unigram.save(tmp_path / "u.json")
    assert Unigram.load(tmp_path / "u.json").encode(HELD_OUT[:3000]) == unigram.encode(HELD_OUT[:3000])
    with pytest.raises(ValueError, match="smaller than the character alphabet"):
        Unigram.train(TRAIN, 30)
    (tmp_path / "bad.json").write_text('{"type": "Unigram", "pieces": [["a", 1.0]]}')
    with pytest.raises(ValueError, match="starts with the unknown piece"):
        Unigram.load(tmp_path / "bad.json")


def test_word_level_matches_hf_word_level_trainer(tmp_path):
    ours = WordTokenizer.train(TRAIN, 1000)
    hf = tokenizers.Tokenizer(models.WordLevel(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(
        [TRAIN], trainers.WordLevelTrainer(vocab_size=1000, special_tokens=["<unk>"], show_progress=False)
    )
    assert ours.vocab == sorted(hf.get_vocab(), key=hf.get_vocab().get)
    assert ours.encode(HELD_OUT) == hf.encode(HELD_OUT).ids
    ours.save(tmp_path / "w.json")
    assert WordTokenizer.load(tmp_path / "w.json").vocab == ours.vocab


def test_out_of_vocabulary_problem():
    """Word level: unseen words are lost; character level: unseen characters are lost; bytes lose nothing."""
    words = WordTokenizer.train(TRAIN, 1000)
    assert words.unknown_rate(HELD_OUT) > 0.05
    assert words.decode(words.encode("the tokenizers")) == "the <unk>"
    chars = CharTokenizer.train(TRAIN)
    assert chars.unknown_rate("日本語 😀") > 0.5 and chars.unknown_rate(TRAIN) == 0
    assert chars.decode(chars.encode(TRAIN[:500])) == TRAIN[:500]


def test_char_tokenizer_basics_and_errors(tmp_path):
    chars = CharTokenizer.train("abracadabra", 4)
    assert chars.vocab == ["<unk>", "a", "b", "r"]
    assert chars.encode("cab") == [0, 1, 2]
    chars.save(tmp_path / "c.json")
    assert CharTokenizer.load(tmp_path / "c.json").vocab == chars.vocab
    with pytest.raises(ValueError, match="smaller than the minimum"):
        CharTokenizer.train("abc", 1)
    with pytest.raises(ValueError, match="smaller than the minimum"):
        WordTokenizer.train("abc", 0)
    with pytest.raises(ValueError, match="outside"):
        chars.decode([99])
