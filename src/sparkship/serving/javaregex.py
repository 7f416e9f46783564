"""Java's regular expressions and ``String`` behaviour as Spark's text stages see them, in Python's ``re``.

:func:`java_regex` accepts the part of Java's syntax that Python's ``re`` (with ``re.ASCII``) reads the same way,
rewrites ``.`` to Java's meaning, and refuses everything else with ``ValueError`` (the stages refuse the model
when it is loaded). :func:`java_split` is ``String.split``; :func:`java_length` is ``String.length``.

    >>> java_split(java_regex(r"\\s+"), " Hello  world ")
    ['', 'Hello', 'world']
"""
from __future__ import annotations

import re

# Java's \s is [ \t\n\x0B\f\r]; Python's str \s is wider (Unicode spaces), so Tokenizer splits on this class.
JAVA_SPACE = re.compile(r"[ \t\n\x0b\f\r]")
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
    i, in_class = 0, False
    while i < len(pattern):
        if pattern[i] == "\\":
            piece, i = _escape(pattern, i)
        elif in_class:
            piece, i, in_class = _in_class(pattern, i)
        else:
            piece, i, in_class = _outside_class(pattern, i)
        out.append(piece)
    if in_class:
        raise ValueError("an unclosed character class")
    try:
        return re.compile("".join(out), re.ASCII)
    except re.error as exc:
        raise ValueError(f"the pattern does not compile ({exc})") from None


def _escape(pattern: str, i: int) -> tuple[str, int]:
    """The escape starting at ``pattern[i]`` (a backslash) and the position after it."""
    if i + 1 >= len(pattern):
        raise ValueError("a trailing backslash")
    nxt = pattern[i + 1]
    if nxt in _SIMPLE_ESCAPES or not nxt.isalnum():
        return pattern[i:i + 2], i + 2
    if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", pattern[i + 2:i + 4]):
        return pattern[i:i + 4], i + 4
    if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", pattern[i + 2:i + 6]):
        return pattern[i:i + 6], i + 6
    raise ValueError(f"Java regex construct '\\{nxt}' is not supported")


def _in_class(pattern: str, i: int) -> tuple[str, int, bool]:
    """One character inside a character class, the next position, and whether the class is still open."""
    ch = pattern[i]
    if ch == "[" or pattern.startswith("&&", i):
        raise ValueError("nested character classes and class intersections (&&) are not supported")
    return ch, i + 1, ch != "]"


def _outside_class(pattern: str, i: int) -> tuple[str, int, bool]:
    """The token at ``pattern[i]`` outside a class (rewritten for Python), the next position, and whether it
    opens a character class."""
    ch, n = pattern[i], len(pattern)
    if ch == "[":
        j = i + 2 if pattern.startswith("[^", i) else i + 1
        if j < n and pattern[j] == "]":
            raise ValueError("a ']' first in a character class is not supported")
        return pattern[i:j], j, True
    if ch == "$":
        raise ValueError("Java regex construct '$' (it also matches before a final \\r) is not supported")
    if ch == ".":
        return _JAVA_DOT, i + 1, False
    if ch == "(" and pattern.startswith("(?", i) and not pattern.startswith(("(?:", "(?=", "(?!"), i):
        raise ValueError(f"Java regex group '{pattern[i:i + 3]}' is not supported")
    if ch in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
        raise ValueError("possessive quantifiers are not supported")
    if ch == "{":
        m = _QUANTIFIER.match(pattern, i)
        if not m:
            raise ValueError("a '{' that does not start a {n,m} quantifier is not supported")
        return m.group(0), m.end(), False
    return ch, i + 1, False


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
