"""distinct-n on whitespace tokens, against counts done by hand."""

from __future__ import annotations

import pytest

from alignloop.evaluation.diversity import distinct_n, distinct_scores, is_wordless, ngram_codes, ngrams, wordless_rate


def test_ngrams_are_consecutive_windows():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    with pytest.raises(ValueError, match="at least 1"):
        ngrams(["a"], 0)


def test_distinct_counts_pool_all_responses_without_crossing_them():
    texts = ["the cat sat", "the cat ran", "hi"]
    # unigrams: the cat sat the cat ran hi -> 7 in all, 5 distinct (the, cat, sat, ran, hi)
    assert distinct_n(texts, 1) == pytest.approx(5 / 7)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran); "hi" has none, and "sat the" would cross two
    # responses -> 4 in all, 3 distinct
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_scores(texts) == {"distinct_1": pytest.approx(5 / 7), "distinct_2": pytest.approx(3 / 4)}


def test_ngram_codes_count_what_distinct_n_counts():
    texts = ["the cat sat", "the cat ran", "hi", "cat sat the"]
    codes = ngram_codes(texts, 2)
    # (the cat) (cat sat) (the cat) (cat ran) (cat sat) (sat the): 6 in all, 4 distinct
    assert len(codes) == 6 and len(set(codes)) == 4
    assert len(set(codes)) / len(codes) == pytest.approx(distinct_n(texts, 2))
    assert all(-2**63 <= code < 2**63 for code in codes)  # fits an int64 tensor
    # Fixed codes (blake2b of "the cat"), not Python's per-process salted str hash, so every
    # process of a distributed run gives a bigram the same code.
    assert ngram_codes(["the cat"], 2) == [3042635075010022360] != ngram_codes(["cat the"], 2)


def test_tokens_are_whitespace_words_as_written():
    # Runs of spaces and newlines separate words; case and punctuation make different words.
    assert distinct_n(["Hi  hi\nhi!"], 1) == pytest.approx(3 / 3)
    assert distinct_n(["no no no no"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["no no no no"], 2) == pytest.approx(1 / 3)


def test_no_ngrams_gives_zero():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "   "], 1) == 0.0
    assert distinct_n(["one", "two"], 2) == 0.0


def test_a_reply_is_wordless_when_under_half_its_characters_are_letters_or_digits():
    assert is_wordless("🌍🍻🏽🍗🎢🌍🌍🌍")  # emoji are symbols (Unicode category So), not letters
    assert is_wordless("ok 🌍🌍🌍🌍")  # 2 letters of 6 non-space characters
    assert is_wordless("!!! ???") and is_wordless("") and is_wordless(" \n ")
    assert not is_wordless("I'm fine.")  # 6 of 9 non-space characters are letters
    assert not is_wordless("你好，世界")  # any script's letters count: 4 of 5
    assert not is_wordless("1234 + 5678 = 6912")  # digits count: 12 of 14
    assert not is_wordless("ab!?")  # exactly half is not under half
    assert wordless_rate(["hello", "🌍🌍", "", "fine"]) == 0.5
    assert wordless_rate([]) == 0.0
