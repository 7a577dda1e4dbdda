"""Topic labels: the terms that set a topic apart, by class-based TF-IDF (c-TF-IDF).

Each topic's requests are one document; a term weighs its frequency in the topic times
log(1 + average words per topic / its frequency over all topics), so words every topic uses
sink and the words of one topic rise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TERMS = 5


def top_terms(
    texts: Sequence[str], labels: Sequence[int], count: int, terms: int = TERMS
) -> list[list[str]]:
    """The `terms` best terms (words and two-word phrases) of each of `count` topics."""
    from sklearn.feature_extraction.text import CountVectorizer  # type: ignore[import-untyped]

    if not texts or count == 0:
        return [[] for _ in range(count)]
    vectorizer = CountVectorizer(
        stop_words="english",
        ngram_range=(1, 2),
        min_df=2,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z']+\b",
    )
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words (or fewer than two of any word)
        return [[] for _ in range(count)]
    vocabulary = np.asarray(vectorizer.get_feature_names_out())
    per_topic = np.zeros((count, matrix.shape[1]), dtype=np.float64)
    label_array = np.asarray(labels, dtype=np.intp)
    for topic in range(count):
        rows = np.flatnonzero(label_array == topic)
        if len(rows):
            per_topic[topic] = np.asarray(matrix[rows].sum(axis=0)).ravel()
    words = per_topic.sum(axis=1, keepdims=True)
    tf = per_topic / np.maximum(words, 1.0)
    idf = np.log(1.0 + words.mean() / np.maximum(per_topic.sum(axis=0), 1.0))
    weights = tf * idf
    result = []
    for topic in range(count):
        best = np.argsort(-weights[topic])[:terms]
        result.append([str(vocabulary[i]) for i in best if weights[topic, i] > 0])
    return result
