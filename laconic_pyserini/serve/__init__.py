"""A search service over served indexes: pyserini's REST contract, batched query encoding, explanations of each
hit, Prometheus metrics, MCP tools and a page (``python -m laconic_pyserini.serve``)."""
