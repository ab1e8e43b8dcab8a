"""Distinct-n: how varied a model's responses are, the cheapest check that RL did not collapse them;
and the share of responses that are not words at all (`wordless_rate`).

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
Models") is the number of distinct n-grams divided by the total number of n-grams, pooled
over all responses of one model. Here the tokens are whitespace-separated words, as written
(no lower-casing, punctuation stays attached): the number then does not depend on the model's
tokenizer, so policies with different vocabularies compare, and it is easy to check by hand.
N-grams never span two responses. A policy that repeats one phrase everywhere scores near 0; a
value near 1 means almost every n-gram occurs once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["ngrams", "text_ngrams", "distinct_n", "distinct_scores", "ngram_codes", "is_wordless", "wordless_rate"]


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The consecutive n-word windows of `words` (none when there are fewer than n words)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def text_ngrams(texts: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of every text's whitespace words, text by text (none spans two texts)."""
    return [gram for text in texts for gram in ngrams(text.split(), n)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all `texts` (whitespace tokens); 0.0 when there are none."""
    grams = text_ngrams(texts, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def ngram_codes(texts: Sequence[str], n: int) -> list[int]:
    """Every n-gram of `texts` (as `distinct_n` counts them) as a signed 64-bit code, the same in
    every process (Python's str hash is salted per process), so that distributed training can
    gather them as a tensor: distinct_n = unique codes / codes, up to hash collisions (for a
    step's 2,000 n-grams, a chance of about 1e-13 that any two collide: 2000² / 2^65). Words
    hold no whitespace, so joining them with a space keeps n-grams apart."""
    return [int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest(), "little", signed=True)
            for gram in text_ngrams(texts, n)]


def distinct_scores(texts: Sequence[str]) -> dict[str, float]:
    """{"distinct_1", "distinct_2"} of `texts`, as eval.json records them."""
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}


# A reply whose non-space characters are less than half letters or digits (any script's: CJK
# text counts) is not language: emoji strings, punctuation runs, an empty reply. A reward model
# trained on a model's ordinary replies saw almost none and may rate them anything; a toxicity
# scorer finds nothing wrong in them. One float32 demo run (seed 2, replies of 24 tokens)
# answered 17 of 320 held-out prompts with emoji strings, 78 with a weaker missing-EOS penalty,
# and alt-profanity-check counted each as detoxified.
WORD_SHARE_BELOW = 0.5


def is_wordless(text: str) -> bool:
    """Whether fewer than half of `text`'s non-space characters are letters or digits."""
    characters = [c for c in text if not c.isspace()]
    return not characters or sum(c.isalnum() for c in characters) < WORD_SHARE_BELOW * len(characters)


def wordless_rate(texts: Sequence[str]) -> float:
    """The share of `texts` that are wordless (`is_wordless`); 0.0 for none."""
    return sum(map(is_wordless, texts)) / len(texts) if texts else 0.0
