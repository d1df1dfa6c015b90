"""A small SQL lexer, and statement shapes.

``Tokens(sql)`` splits SQL text into tokens (kind and text; every literal and
placeholder becomes one ``?`` value token) without parsing it: it is the
shared tokenizer of the N+1 guard and slow-query log (``normalize``) and of
explain's table and alias lookup (``aliases``). Which tables a statement reads or writes
(for the result cache) is ``fastpool.sqltext.tables``, a real parser.
"""

from __future__ import annotations

import functools
import re

__all__ = ["OP", "OTHER", "SPACE", "VALUE", "WORD", "Tokens", "aliases", "normalize"]

#: Statements up to this many characters are cached (the same SQL text comes
#: back millions of times); longer ones, typically carrying inline data, are
#: normalized every time rather than filling the cache.
CACHE_MAX_CHARS = 8192
#: Distinct statements kept in the cache (least recently used go first).
CACHE_SIZE = 1024

# One token per match, the common kinds first. Every literal is matched whole,
# an unterminated one running to the end of the text. Block comments are
# matched up to the first */; one that nests (PostgreSQL) is re-scanned.
_TOKEN = re.compile(r"""
      (?P<space>(?:\s+|--[^\n]*)+)                 # whitespace and -- comments
    | (?P<pstr>(?:[eEbBxXnN]|[uU]&|_[A-Za-z][A-Za-z0-9]*)'  # E'..' B'01' X'ff' N'..' U&'..'
               (?:[^'\\]+|\\.|'')*'?)             # and MySQL's _utf8mb4'..'
    | (?P<word>[^\W\d][\w$]*)
    | (?P<value>
          '(?:[^'\\]+|\\.|'')*'?                   # '' and \' both escape a quote
        | 0[xX][0-9A-Fa-f_]+
        | (?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?
        | %\([^()]*\)[sbt] | %[sbt] | \?\d* | \$\d+ | :[^\W\d]\w*)
    | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$      # $$..$$, $tag$..$tag$
                 (?:.*?\$(?P=tag)\$|.*))
    | (?P<param>\$[^\W\d]\w*)                      # SQLite's $name
    | (?P<block>/\*(?:[^*]+|\*(?!/))*(?:\*/)?)
    | (?P<other>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?)  # quoted identifiers stay as written
    | (?P<op>::|%%|.)
""", re.VERBOSE | re.DOTALL)

_BLOCK_MARK = re.compile(r"/\*|\*/")

VALUE, WORD, OP, OTHER, SPACE = range(5)
KINDS = {"value": VALUE, "pstr": VALUE, "dollar": VALUE, "param": VALUE, "word": WORD,
          "op": OP, "other": OTHER, "space": SPACE, "block": SPACE}

# After these words a sign belongs to the number that follows (`= -1`, `THEN -1`),
# after an identifier, a value or a closing bracket it is arithmetic (`a - 1`).
_PREFIXWORDS = frozenset((
    "SELECT", "WHERE", "AND", "OR", "NOT", "THEN", "ELSE", "WHEN", "BETWEEN", "IN", "IS", "LIKE",
    "ILIKE", "VALUES", "SET", "RETURN", "LIMIT", "OFFSET", "BY", "ON", "AS", "CASE", "DEFAULT",
    "HAVING", "ANY", "ALL", "SOME", "EXISTS", "DISTINCT", "INTERVAL", "ESCAPE", "FETCH", "FIRST",
    "NEXT"))


def _skip_block_comment(sql: str, pos: int, first_close: int) -> int:
    """The end of the /* comment opened at ``pos``: PostgreSQL nests them; if
    the nesting never closes, it is MySQL's kind, ending at ``first_close``."""
    depth = 0
    for mark in _BLOCK_MARK.finditer(sql, pos):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return first_close


class Tokens:
    """``sql`` as parallel lists: kind, text (``?`` for every value) and
    whether whitespace or a comment came before each token."""

    __slots__ = ("kinds", "spaces", "texts")

    def __init__(self, sql: str) -> None:
        kinds: list[int] = []
        texts: list[str] = []
        spaces: list[bool] = []
        self.kinds, self.texts, self.spaces = kinds, texts, spaces
        pos, end, space = 0, len(sql), False
        while pos < end:
            for m in _TOKEN.finditer(sql, pos):
                kind = KINDS[m.lastgroup]  # type: ignore[index]
                if kind == SPACE:
                    space = True
                    if m.lastgroup == "block" and "/*" in m.group()[2:]:
                        pos = _skip_block_comment(sql, m.start(), m.end())  # nested: rescan
                        break
                elif kind == VALUE:
                    if texts and kinds[-1] == OP and texts[-1] in ("-", "+") and self._unary():
                        kinds[-1], texts[-1] = VALUE, "?"  # -1 is one value, a - 1 is not
                    else:
                        kinds.append(VALUE)
                        texts.append("?")
                        spaces.append(space)
                    space = False
                else:
                    kinds.append(kind)
                    texts.append(m.group())
                    spaces.append(space)
                    space = False
            else:
                pos = end
        while texts and texts[-1] == ";" and kinds[-1] == OP:
            del kinds[-1], texts[-1], spaces[-1]

    def _unary(self) -> bool:
        """Is the sign just appended a prefix of the value that follows it?"""
        if len(self.texts) < 2:
            return True
        kind, text = self.kinds[-2], self.texts[-2]
        if kind == OP:
            return text not in (")", "]")
        return kind == WORD and text.upper() in _PREFIXWORDS

    def brackets(self) -> list[int]:
        """For each opening ( or [ the index of its closing partner (-1: none)."""
        partner = [-1] * len(self.texts)
        stack: list[int] = []
        for i, (kind, text) in enumerate(zip(self.kinds, self.texts, strict=True)):
            if kind == OP:
                if text == "(" or text == "[":
                    stack.append(i)
                elif (text == ")" or text == "]") and stack:
                    partner[stack.pop()] = i
        return partner

    def only_values(self, start: int, stop: int) -> bool:
        """``[start:stop]`` is ``?, ?, ..., ?`` (at least one value)."""
        if stop <= start or (stop - start) % 2 == 0:
            return False
        return (all(k == VALUE for k in self.kinds[start:stop:2])
                and all(t == "," for t in self.texts[start + 1:stop:2]))

    def group_run(self, partner: list[int], start: int) -> tuple[int, int]:
        """From the group opening at ``start``: (index after it, index after the
        run of identical comma-separated groups that begins with it)."""
        texts = self.texts
        after_first = partner[start] + 1
        key = texts[start:after_first]
        width = after_first - start
        stop = after_first
        while (stop + 1 < len(texts) and texts[stop] == "," and texts[stop + 1] == "("
               and partner[stop + 1] == stop + width
               and texts[stop + 1:stop + 1 + width] == key):
            stop += 1 + width
        return after_first, stop


def _shape(sql: str) -> str:
    tokens = Tokens(sql)
    kinds, texts, spaces = tokens.kinds, tokens.texts, tokens.spaces
    partner: list[int] | None = None
    out: list[str] = []
    resume_at: dict[int, int] = {}  # index -> where to go on after writing ", ..."
    i, n = 0, len(texts)
    while i < n:
        if i in resume_at:
            out.append(", ...")
            i = resume_at.pop(i)
            continue
        text = texts[i]
        if spaces[i] and out:
            out.append(" ")
        out.append(text)
        i += 1
        if i < n and kinds[i - 1] == WORD and (texts[i] == "(" or texts[i] == "[") \
                and text.upper() in ("IN", "ARRAY", "VALUES"):
            if partner is None:
                partner = tokens.brackets()
            closing = partner[i]
            if closing < 0:
                continue
            word = text.upper()
            if word != "VALUES" and tokens.only_values(i + 1, closing):
                # IN (?, ?, ?) / ARRAY[?, ?]: a list of any length is one shape.
                if spaces[i]:
                    out.append(" ")
                out.append(texts[i] + "..." + texts[closing])
                i = closing + 1
                continue
            # VALUES (?, ?), (?, ?) / IN ((?, ?), (?, ?)): the rows collapse.
            first = i + 1 if word == "IN" and texts[i + 1] == "(" else i
            if texts[first] == "(" and partner[first] > 0:
                after_first, after_run = tokens.group_run(partner, first)
                if after_run > after_first:
                    resume_at[after_first] = after_run
    return "".join(out)


_cached_shape = functools.lru_cache(maxsize=CACHE_SIZE)(_shape)


def normalize(sql: str) -> str:
    """The shape of ``sql``: what stays the same when only its values change.

    - string literals (``'..'`` with ``''`` or ``\\'`` escapes, ``E'..'``,
      ``$$..$$``, ``$tag$..$tag$``, ``B'..'``, ``X'..'``, ``N'..'``,
      ``_utf8mb4'..'``), numbers (with a unary sign) and placeholders (``%s``,
      ``%(name)s``, ``?``, ``?1``, ``:name``, ``$1``) become ``?``;
    - ``IN (?, ?, ?)`` and ``ARRAY[?, ?]`` become ``IN (...)``/``ARRAY[...]``;
      repeated rows ``VALUES (?, ?), (?, ?)`` become ``VALUES (?, ?), ...``;
    - comments go; runs of whitespace become one space; a trailing ``;`` goes;
    - keywords and identifiers (plain, ``"quoted"`` or in backticks) stay as written.

    Results for statements up to CACHE_MAX_CHARS long are cached (LRU of
    CACHE_SIZE entries). Backslashes escape quotes inside ``'..'`` as in MySQL;
    a PostgreSQL string that *ends* with a backslash (``'C:\\'``) therefore
    swallows what follows into the literal, which only blurs that shape.

    >>> normalize("select * from t where a = 'x''y' and b in (1, -2, %s)")
    'select * from t where a = ? and b in (...)'
    """
    if type(sql) is not str:
        raise TypeError(f"normalize() needs the SQL text as a str, got {type(sql).__name__}")
    if len(sql) > CACHE_MAX_CHARS:
        return _shape(sql)
    return _cached_shape(sql)


# ---- the tables a statement names, with their aliases (for reading plans) ----------

_TABLE_AFTER = frozenset(("FROM", "JOIN", "UPDATE", "INTO"))
_NOT_ALIAS = frozenset((
    "WHERE", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "OUTER", "ON",
    "USING", "GROUP", "ORDER", "LIMIT", "OFFSET", "FETCH", "SET", "VALUES", "HAVING", "WINDOW",
    "UNION", "EXCEPT", "INTERSECT", "RETURNING", "FOR", "STRAIGHT_JOIN", "LATERAL", "SELECT",
    "DEFAULT", "USE", "FORCE", "IGNORE", "PARTITION", "INDEXED", "NOT", "WITH", "TABLESAMPLE",
    "ONLY", "LOCK", "SHARE", "WAIT", "NOWAIT", "SKIP", "DO", "CONFLICT", "OUTFILE"))


def _unquote(text: str) -> str:
    if text[:1] in ('"', "`") and len(text) > 1:
        return text[1:-1].replace(text[0] * 2, text[0])
    return text


def aliases(sql: str) -> dict[str, str]:
    """Tables named after FROM/JOIN/UPDATE/INTO in ``sql``: alias or name
    (lower case) -> the name as written (``schema.table`` if qualified)."""
    tokens = Tokens(sql)
    kinds, texts = tokens.kinds, tokens.texts
    found: dict[str, str] = {}
    i, n = 0, len(texts)
    while i < n:
        if not (kinds[i] == WORD and texts[i].upper() in _TABLE_AFTER):
            i += 1
            continue
        from_list = texts[i].upper() == "FROM"
        i += 1
        while i < n:
            if kinds[i] == WORD and texts[i].upper() == "ONLY":
                i += 1
            parts: list[str] = []
            while i < n and kinds[i] in (WORD, OTHER) and texts[i].upper() not in _NOT_ALIAS:
                parts.append(_unquote(texts[i]))
                if i + 2 < n and texts[i + 1] == ".":
                    i += 2
                    continue
                i += 1
                break
            if not parts:
                break  # a subquery
            name = ".".join(parts)  # or a table function's name: looked up, found nowhere
            found.setdefault(parts[-1].lower(), name)
            if i < n and kinds[i] == WORD and texts[i].upper() == "AS":
                i += 1
            if i < n and kinds[i] in (WORD, OTHER) and texts[i].upper() not in _NOT_ALIAS:
                found[_unquote(texts[i]).lower()] = name
                i += 1
            if not (from_list and i < n and texts[i] == ","):
                break
            i += 1
    return found
