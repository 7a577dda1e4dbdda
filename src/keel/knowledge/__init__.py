"""Knowledge bases: documents ingested, chunked, embedded and indexed (vector + BM25) per
project, hybrid search over them, and a groundedness scorer for answers built from them."""
