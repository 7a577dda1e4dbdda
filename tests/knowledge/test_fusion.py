import numpy as np

from keel.knowledge.fusion import Fusion, fuse


def test_a_document_matching_on_both_lists_through_different_chunks_ranks_first() -> None:
    # Document 0: chunk 0 holds the query's words, chunk 1 its meaning; document 1's one
    # chunk is middling on both lists.
    dense = np.asarray([0.10, 0.90, 0.60], dtype=np.float32)
    lexical = np.asarray([9.0, 0.5, 6.0], dtype=np.float32)
    groups = np.asarray([0, 0, 1], dtype=np.int64)
    chunks_alone, _ = fuse(dense, lexical, Fusion(), 3, groups=groups)
    assert chunks_alone[0] == 2  # no single chunk of document 0 is strong on both
    with_documents, scores = fuse(dense, lexical, Fusion(document_weight=0.5), 3, groups=groups)
    assert set(with_documents[:2].tolist()) == {0, 1}
    assert with_documents[2] == 2
    assert scores[0] >= scores[1] >= scores[2]


def test_document_weight_without_groups_changes_nothing() -> None:
    dense = np.asarray([0.2, 0.9, 0.5], dtype=np.float32)
    lexical = np.asarray([3.0, 0.0, 1.0], dtype=np.float32)
    plain, _ = fuse(dense, lexical, Fusion(), 3)
    weighted, _ = fuse(dense, lexical, Fusion(document_weight=0.5), 3)
    assert plain.tolist() == weighted.tolist()
