"""Index builds, one module per engine, and the index folder's manifest.

- :mod:`.manifest`: ``manifest.json`` of every index folder (kind, documents, encoder spec); :class:`IndexFolderError`.
- :mod:`.lucene`: Anserini's ``IndexCollection`` in this process's JVM; BM25 indexes of BEIR corpora.
- :mod:`.impact`: Lucene impact indexes of encoded collections (``python -m laconic_pyserini.encode``).
- :mod:`.faiss`: faiss index folders (the layout pyserini's ``FaissSearcher`` reads) from dense vectors.
- :mod:`.seismic`: Seismic indexes built beside an impact index, from the same encoded collection.
- :mod:`.recipe`: index recipes (``index_recipes/*.yaml``), checked, and the commands they stand for;
  :mod:`.recipe_build` builds one in-process (encode + index + check the document count).

``python -m laconic_pyserini.index`` is the CLI (:mod:`.__main__`). Nothing here imports the JVM, torch or faiss
at import time.
"""
