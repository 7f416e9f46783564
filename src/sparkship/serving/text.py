"""Text stages (one small class per Spark ML stage, named as in Spark): tokenizers, stop words, n-grams,
bag-of-words counts, IDF weights and Word2Vec sentence vectors. Hashing stages are in
:mod:`sparkship.serving.hashing`.

Token columns have the scorer type ``array<string>`` (lists of ``str`` on the row path, object arrays of lists on
the batch path). As in Spark, a null text or token list makes these stages fail the job (Spark's UDFs throw a
NullPointerException): the scorer raises :class:`InvalidRecordError` naming the column.

RegexTokenizer patterns are Java regular expressions, read by :func:`sparkship.serving.javaregex.java_regex`
(what Python would read differently is refused when the model is loaded).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from sparkship.serving import reader
from sparkship.serving.base import Schema, Stage, UnsupportedModelError, register_stage
from sparkship.serving.batch import Batch
from sparkship.serving.javaregex import JAVA_SPACE, java_length, java_regex, java_split
from sparkship.serving.numeric import EMPTY
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError

TOKENS = "array<string>"



class MapStage(Stage):
    """A stage that maps each non-null input value with ``fn``; a null input fails, as Spark's UDF does."""

    in_kinds: ClassVar[tuple[str, ...]] = (TOKENS,)
    out_type: ClassVar[str] = TOKENS
    preferred_input_type = TOKENS
    fn: Callable[[Any], Any]

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = self._in_out()

    def out_size(self) -> int | None:
        return None

    def plan(self, schema: Schema) -> None:
        for c, o in zip(self.input_cols, self.output_cols):
            self._need(schema, c, self.in_kinds)
            schema[o] = (self.out_type, self.out_size())

    def _null(self, c: str) -> str:
        return f"{self.meta.short_class} got null (Spark's transform fails on it)"

    def row(self, r: dict[str, Any]) -> bool:
        for c, o in zip(self.input_cols, self.output_cols):
            v = r[c]
            if v is None:
                raise InvalidRecordError(c, self._null(c))
            out = self.fn(v)
            r[o] = out.tolist() if isinstance(out, np.ndarray) else out
        return True

    def batch(self, b: Batch) -> np.ndarray:
        for c, o in zip(self.input_cols, self.output_cols):
            nm = b.null_mask(c)
            if nm is not None:
                b.fail(nm, c, self._null(c))
            values = b.cols[c]
            out: np.ndarray
            if self.out_type == "vector":
                out = np.zeros((b.n, int(self.out_size() or 0)), dtype=np.float64)
                for i, v in enumerate(values):
                    out[i] = self.fn(v)
            else:
                out = np.empty(b.n, dtype=object)
                for i, v in enumerate(values):
                    out[i] = self.fn(v)
            b.set(o, out, self.out_type)
        return EMPTY


@register_stage
class Tokenizer(MapStage):
    """Lower-cases the text and splits it on single whitespace characters (Java's ``split("\\\\s")``)."""

    spark_class = "org.apache.spark.ml.feature.Tokenizer"
    known_params = frozenset({"inputCol", "outputCol"})
    in_kinds = ("string",)
    preferred_input_type = "string"

    def fn(self, s: str) -> list[str]:
        return java_split(JAVA_SPACE, s.lower())


@register_stage
class RegexTokenizer(MapStage):
    """Splits on ``pattern`` (``gaps=True``) or keeps its matches (``gaps=False``); ``toLowercase`` first;
    drops tokens shorter than ``minTokenLength`` (UTF-16 length, as Java counts)."""

    spark_class = "org.apache.spark.ml.feature.RegexTokenizer"
    known_params = frozenset({"inputCol", "outputCol", "pattern", "gaps", "toLowercase", "minTokenLength"})
    in_kinds = ("string",)
    preferred_input_type = "string"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        pattern = self.p("pattern", "\\s+")
        try:
            self.rx = java_regex(pattern)
        except ValueError as exc:
            raise UnsupportedModelError(f"stage {self.uid} (RegexTokenizer): pattern {pattern!r} cannot be matched "
                                        f"exactly as Java does: {exc}") from None
        self.gaps = bool(self.p("gaps", True))
        self.lower = bool(self.p("toLowercase", True))
        self.min_length = int(self.p("minTokenLength", 1))

    def fn(self, s: str) -> list[str]:
        if self.lower:
            s = s.lower()
        tokens = java_split(self.rx, s) if self.gaps else [m.group(0) for m in self.rx.finditer(s)]
        if self.min_length > 0:
            tokens = [t for t in tokens if java_length(t) >= self.min_length]
        return tokens


# Locales whose lower-casing rules differ from the root locale's (Java's toLowerCase(Locale)).
_SPECIAL_CASE_LOCALES = ("tr", "az", "lt")


@register_stage
class StopWordsRemover(MapStage):
    """Drops the saved ``stopWords`` from token lists (``caseSensitive``; otherwise compared lower-cased in
    ``locale``, where Turkish, Azeri and Lithuanian rules are refused); single or multi column."""

    spark_class = "org.apache.spark.ml.feature.StopWordsRemover"
    known_params = frozenset({"inputCol", "outputCol", "inputCols", "outputCols", "stopWords", "caseSensitive",
                              "locale"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        words = list(self.p("stopWords") or [])
        self.case_sensitive = bool(self.p("caseSensitive", False))
        locale = str(self.p("locale", "en"))
        if not self.case_sensitive and locale.lower().replace("-", "_").split("_")[0] in _SPECIAL_CASE_LOCALES:
            raise self.refuse(f"locale {locale!r} (its lower-casing differs from Python's)")
        self.words = frozenset(words) if self.case_sensitive else frozenset(w.lower() for w in words if w is not None)

    def fn(self, terms: list[str | None]) -> list[str | None]:
        words = self.words
        if self.case_sensitive:
            return [t for t in terms if t not in words]
        return [t for t in terms if t is None or t.lower() not in words]


@register_stage
class NGram(MapStage):
    """Space-joined runs of ``n`` consecutive tokens (none when there are fewer than ``n``)."""

    spark_class = "org.apache.spark.ml.feature.NGram"
    known_params = frozenset({"inputCol", "outputCol", "n"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.n = int(self.p("n", 2))

    def fn(self, terms: list[str | None]) -> list[str]:
        words = ["null" if t is None else t for t in terms]  # Scala's mkString writes null as "null"
        return [" ".join(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]


@register_stage
class CountVectorizerModel(MapStage):
    """Counts of vocabulary terms; terms under ``minTF`` (a count, or a fraction of the document's tokens when
    below 1) are dropped; ``binary`` makes counts 1."""

    spark_class = "org.apache.spark.ml.feature.CountVectorizerModel"
    known_params = frozenset({"inputCol", "outputCol", "minTF", "binary", "minDF", "maxDF", "vocabSize"})
    out_type = "vector"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.vocabulary = list(reader.read_data(meta.path)[0]["vocabulary"])
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.min_tf = to_double(self.p("minTF", 1.0))
        self.binary = bool(self.p("binary", False))

    def out_size(self) -> int:
        return len(self.vocabulary)

    def fn(self, terms: list[str | None]) -> np.ndarray:
        out = np.zeros(len(self.vocabulary), dtype=np.float64)
        index = self.index
        for t in terms:
            i = index.get(t) if t is not None else None
            if i is not None:
                out[i] += 1.0
        # All tokens count towards the fraction, out-of-vocabulary ones too.
        min_tf = self.min_tf if self.min_tf >= 1.0 else len(terms) * self.min_tf
        out[out < min_tf] = 0.0
        if self.binary:
            out[out > 0] = 1.0
        return out


@register_stage
class IDFModel(Stage):
    """Multiplies each term frequency by its fitted inverse document frequency."""

    spark_class = "org.apache.spark.ml.feature.IDFModel"
    known_params = frozenset({"inputCol", "outputCol", "minDocFreq"})
    preferred_input_type = "vector"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.input_cols, self.output_cols = [self.p("inputCol")], [self.p("outputCol")]
        self.idf = reader.vector(reader.read_data(meta.path)[0]["idf"])
        self._idf_l = self.idf.tolist()

    def plan(self, schema: Schema) -> None:
        _, size = self._need(schema, self.input_cols[0], ("vector",))
        if size is not None and size != len(self.idf):
            raise self.refuse(f"input of size {size} (the model was fitted on {len(self.idf)})")
        schema[self.output_cols[0]] = ("vector", len(self.idf))

    def row(self, r: dict[str, Any]) -> bool:
        v = r[self.input_cols[0]]
        if v is None:
            raise InvalidRecordError(self.input_cols[0], "IDFModel got a null vector (Spark's transform fails on it)")
        # Spark multiplies only the stored entries of a sparse vector: an absent term stays 0.0.
        r[self.output_cols[0]] = [x * w if x != 0.0 else 0.0 for x, w in zip(v, self._idf_l)]
        return True

    def batch(self, b: Batch) -> np.ndarray:
        c = self.input_cols[0]
        nm = b.null_mask(c)
        if nm is not None:
            b.fail(nm, c, "IDFModel got a null vector (Spark's transform fails on it)")
        x = b.cols[c]
        b.set(self.output_cols[0], np.where(x != 0.0, x * self.idf, 0.0), "vector")
        return EMPTY


@register_stage
class Word2VecModel(MapStage):
    """The mean of the sentence's word vectors: out-of-vocabulary words add nothing but count in the mean;
    an empty sentence gives zeros."""

    spark_class = "org.apache.spark.ml.feature.Word2VecModel"
    known_params = frozenset({"inputCol", "outputCol", "vectorSize", "minCount", "numPartitions", "stepSize",
                              "maxIter", "seed", "windowSize", "maxSentenceLength"})
    out_type = "vector"

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        rows = reader.read_data(meta.path)
        if not rows or set(rows[0]) != {"word", "vector"}:
            raise self.refuse("a saved word-vector layout other than (word, vector) rows")
        self.size = int(self.p("vectorSize", 100))
        # Spark keeps float32 vectors and widens them to double when summing.
        self.vectors = {r["word"]: np.asarray(r["vector"], dtype=np.float32).astype(np.float64) for r in rows}
        if any(len(v) != self.size for v in self.vectors.values()):
            raise UnsupportedModelError(f"stage {self.uid} (Word2VecModel): word vectors are not of vectorSize "
                                        f"{self.size}")

    def out_size(self) -> int:
        return self.size

    def fn(self, terms: list[str | None]) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.float64)
        if not terms:
            return out
        for t in terms:
            v = self.vectors.get(t) if t is not None else None
            if v is not None:
                out += v
        return out * (1.0 / len(terms))
