"""The front door: what a pyserini user types, on every backend of this toolkit.

:mod:`.searcher` wraps any searcher of the internal protocol (:mod:`laconic_pyserini.searchers`) in pyserini's
idiom (``search``, ``batch_search(queries, qids)``, ``doc``, ``close``, ``with``); :mod:`.documents` finds a hit's
text; :mod:`.encoder` is ``load_encoder`` (``encode_query`` / ``encode_document``, as sentence-transformers names
them). ``laconic_pyserini`` re-exports these names lazily.
"""
