"""Text stages (one small class per Spark ML stage, named as in Spark): tokenizers, stop words, n-grams,
bag-of-words counts, IDF weights and Word2Vec sentence vectors. Hashing stages are in
:mod:`sparkship.serving.hashing`.

Token columns have the scorer type ``array<string>`` (lists of ``str`` on the row path, object arrays of lists on
the batch path). As in Spark, a null text or token list makes these stages fail the job (Spark's UDFs throw a
NullPointerException): the scorer raises :class:`InvalidRecordError` naming the column.

RegexTokenizer patterns are Java regular expressions. :func:`java_regex` accepts the part of Java's syntax that
Python's ``re`` (with ``re.ASCII``) reads the same way, rewrites ``.`` to Java's meaning, and refuses everything
else when the model is loaded.

    >>> java_split(java_regex(r"\\s+"), " Hello  world ")
    ['', 'Hello', 'world']
"""
from __future__ import annotations

import re
from typing import Any, Callable, ClassVar

import numpy as np

from sparkship.serving import reader
from sparkship.serving.batch import Batch
from sparkship.serving.reader import StageMetadata, to_double
from sparkship.serving.signature import InvalidRecordError
from sparkship.serving.stages import Schema, Stage, UnsupportedModelError

_EMPTY = np.empty(0, dtype=np.int64)
TOKENS = "array<string>"

# Java's \s is [ \t\n\x0B\f\r]; Python's str \s is wider (Unicode spaces), so Tokenizer splits on this class.
_JAVA_SPACE = re.compile(r"[ \t\n\x0b\f\r]")
# Java's "." excludes these line terminators; Python's excludes only "\n".
_JAVA_DOT = r"[^\n\r\u0085\u2028\u2029]"
_SIMPLE_ESCAPES = set("tnrfsSwWdD")
_QUANTIFIER = re.compile(r"\{\d+(,\d*)?\}")


def java_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Java regex to an equivalent Python pattern, or raise ``ValueError`` naming the construct.

    Accepted: literals, escaped punctuation, ``\\t \\n \\r \\f \\s \\S \\w \\W \\d \\D``, ``\\xhh``, ``\\uhhhh``,
    character classes without nesting or intersection, ``.``, ``^``, groups ``( )``, ``(?: )``, lookaheads,
    alternation and greedy or lazy quantifiers. Refused: ``\\b``, ``$``, ``\\p{..}``, ``\\Q..\\E``, back
    references, inline flags, named groups, possessive quantifiers, lookbehinds and other escapes, whose Java
    meaning differs from Python's or that Python lacks.

    >>> java_regex(r"[a-z]+").pattern
    '[a-z]+'
    >>> java_regex(r"\\p{L}+")
    Traceback (most recent call last):
    ...
    ValueError: Java regex construct '\\p' is not supported
    """
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("a trailing backslash")
            nxt = pattern[i + 1]
            if nxt in _SIMPLE_ESCAPES or not nxt.isalnum():
                out.append(pattern[i:i + 2])
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", pattern[i + 2:i + 4]):
                out.append(pattern[i:i + 4])
                i += 4
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", pattern[i + 2:i + 6]):
                out.append(pattern[i:i + 6])
                i += 6
                continue
            raise ValueError(f"Java regex construct '\\{nxt}' is not supported")
        if in_class:
            if ch == "[" or pattern.startswith("&&", i):
                raise ValueError("nested character classes and class intersections (&&) are not supported")
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            j = i + 2 if pattern.startswith("[^", i) else i + 1
            if j < n and pattern[j] == "]":
                raise ValueError("a ']' first in a character class is not supported")
            in_class = True
            out.append(pattern[i:j])
            i = j
            continue
        if ch == "$":
            raise ValueError("Java regex construct '$' (it also matches before a final \\r) is not supported")
        if ch == ".":
            out.append(_JAVA_DOT)
            i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i) and not pattern.startswith(("(?:", "(?=", "(?!"), i):
            raise ValueError(f"Java regex group '{pattern[i:i + 3]}' is not supported")
        if ch in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise ValueError("possessive quantifiers are not supported")
        if ch == "{":
            m = _QUANTIFIER.match(pattern, i)
            if not m:
                raise ValueError("a '{' that does not start a {n,m} quantifier is not supported")
            out.append(m.group(0))
            i = m.end()
            continue
        out.append(ch)
        i += 1
    if in_class:
        raise ValueError("an unclosed character class")
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error as exc:
        raise ValueError(f"the pattern does not compile ({exc})") from None


def java_split(rx: re.Pattern[str], s: str) -> list[str]:
    """``String.split(regex)`` as Java does it: no leading empty string for a zero-width match at 0, trailing
    empty strings removed, and the whole input when nothing matches."""
    parts: list[str] = []
    index = 0
    matched = False
    for m in rx.finditer(s):
        if m.start() == 0 and m.end() == 0:
            continue
        matched = True
        parts.append(s[index:m.start()])
        index = m.end()
    if not matched:
        return [s]
    parts.append(s[index:])
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def java_length(s: str) -> int:
    """``String.length()``: UTF-16 code units (a character outside the BMP counts 2)."""
    return len(s) if s.isascii() else len(s.encode("utf-16-le")) // 2


class _MapStage(Stage):
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
            if self.out_type == "vector":
                out = np.zeros((b.n, int(self.out_size() or 0)), dtype=np.float64)
                for i, v in enumerate(values):
                    out[i] = self.fn(v)
            else:
                out = np.empty(b.n, dtype=object)
                for i, v in enumerate(values):
                    out[i] = self.fn(v)
            b.set(o, out, self.out_type)
        return _EMPTY


class Tokenizer(_MapStage):
    """Lower-cases the text and splits it on single whitespace characters (Java's ``split("\\\\s")``)."""

    spark_class = "org.apache.spark.ml.feature.Tokenizer"
    known_params = frozenset({"inputCol", "outputCol"})
    in_kinds = ("string",)
    preferred_input_type = "string"

    def fn(self, s: str) -> list[str]:
        return java_split(_JAVA_SPACE, s.lower())


class RegexTokenizer(_MapStage):
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


class StopWordsRemover(_MapStage):
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


class NGram(_MapStage):
    """Space-joined runs of ``n`` consecutive tokens (none when there are fewer than ``n``)."""

    spark_class = "org.apache.spark.ml.feature.NGram"
    known_params = frozenset({"inputCol", "outputCol", "n"})

    def __init__(self, meta: StageMetadata) -> None:
        super().__init__(meta)
        self.n = int(self.p("n", 2))

    def fn(self, terms: list[str | None]) -> list[str]:
        words = ["null" if t is None else t for t in terms]  # Scala's mkString writes null as "null"
        return [" ".join(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]


class CountVectorizerModel(_MapStage):
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
        return _EMPTY


class Word2VecModel(_MapStage):
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
