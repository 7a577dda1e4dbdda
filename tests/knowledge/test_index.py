import numpy as np

from keel.knowledge.index import ANN_MIN, DenseIndex, LexicalIndex, top_k


def test_the_ann_graph_finds_what_exact_search_finds() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((ANN_MIN + 500, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = DenseIndex(vectors)
    query = vectors[1234]
    graph_positions, graph_scores = index.search(query, 5)  # above ANN_MIN: the graph
    exact_positions, exact_scores = top_k(index.scores(query), 5)
    assert graph_positions[0] == exact_positions[0] == 1234
    assert abs(float(graph_scores[0]) - float(exact_scores[0])) < 0.01


def test_bm25_ranks_the_text_with_the_rarer_shared_words_first() -> None:
    lexical = LexicalIndex()
    lexical.build(["the cat sat on the mat", "vaccines reduce measles", "", "a cat and a dog"])
    positions, _ = top_k(lexical.scores("Measles vaccination"), 2)
    assert positions[0] == 1
    assert lexical.scores("unrelated words").max() == 0
