"""Reading the text of a SQL statement: its shape, its kind, what it writes and reads.

Statistics, the write tracking behind the result cache and the index advisor
all need a little knowledge of a statement without a parser: which verb it
starts with, which tables an INSERT/UPDATE/DELETE names, which names a SELECT
mentions, whether it calls a clock or a random generator. Every helper here
works on tokens that skip string literals, quoted identifiers and comments, so
a ``'DELETE FROM sessions'`` inside a literal is never mistaken for a write.

The answers err on the safe side where safety matters: a write whose table
cannot be named writes "everything" (:data:`ALL_TABLES`), and a read mentions
every known table whose name appears anywhere in it (a column named like a
table only costs an extra invalidation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALL_TABLES",
    "SqlText",
    "aliases",
    "compact",
    "count_params",
    "mentioned",
    "names",
    "nondeterministic_reason",
    "normalize",
    "numbered_params",
    "parse",
    "quote_literal",
    "single_statement",
    "tokens",
    "where_clause",
    "write_targets",
]

#: Stands for "any table": DDL, VACUUM, or a write whose target was not found.
ALL_TABLES = "*"

_TOKEN = re.compile(
    r"'(?:[^']|'')*'"            # string literal
    r"|\"(?:[^\"]|\"\")*\""      # quoted identifier
    r"|`[^`]*`|\[[^\]]*\]"       # SQLite's other identifier quotes
    r"|--[^\n]*|/\*.*?\*/"       # comments
    r"|[A-Za-z_][A-Za-z0-9_$]*"  # word
    r"|\?|->>|->|#>>|#>|::|<=|>=|<>|!=|\|\||\S",
    re.S,
)
_WS_OR_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\s+",
                            re.S)
_PARAM_LIST = re.compile(r"\?(?:\s*,\s*\?)+")
_ROW_LIST = re.compile(r"\(\?, \.\.\.\)(?:, \(\?, \.\.\.\))+")

_TX_WORDS = frozenset({"begin", "commit", "end", "rollback", "savepoint", "release"})
_DDL_WORDS = frozenset({"create", "drop", "alter", "vacuum", "reindex", "truncate"})
_WRITE_WORDS = frozenset({"insert", "update", "delete", "replace"})
#: Words after UPDATE that show it is not a write verb (FOR UPDATE, DO UPDATE SET).
_NOT_UPDATE_BEFORE = frozenset({"for", "key", "do", "no"})
_NOT_A_TABLE = frozenset({"set", "of", "skip", "nowait", "only", "or"})

#: Functions whose result changes from call to call (or with the clock).
_VOLATILE = frozenset({
    "random", "randomblob", "current_timestamp", "current_date", "current_time",
    "localtimestamp", "localtime", "now", "clock_timestamp", "statement_timestamp",
    "transaction_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v1",
    "uuid_generate_v4", "nextval", "currval", "lastval", "setval", "changes",
    "total_changes", "last_insert_rowid", "txid_current", "pg_current_xact_id",
    "pg_backend_pid", "unixepoch", "random_normal", "setseed",
})
#: SQLite date functions, which read the clock when given no time value.
_DATE_FUNCS = frozenset({"date", "time", "datetime", "julianday", "strftime", "timediff"})
#: Literals the date functions and PostgreSQL's input parsers turn into "now".
_CLOCK_LITERALS = frozenset({"'now'", "'today'", "'tomorrow'", "'yesterday'", "'localtime'"})

#: Words that end a table reference in FROM/JOIN (so they are never an alias).
_CLAUSE_WORDS = frozenset({
    "where", "join", "left", "right", "inner", "outer", "cross", "natural", "full", "on",
    "using", "group", "order", "limit", "offset", "having", "union", "except", "intersect",
    "window", "set", "values", "returning", "for", "indexed", "not", "select", "from",
    "lateral", "as", "tablesample", "with", "do",
})
_WHERE_END = re.compile(r"\b(?:GROUP\s+BY|ORDER\s+BY|LIMIT|HAVING|WINDOW|RETURNING|UNION|"
                        r"EXCEPT|INTERSECT|FOR\s+(?:NO\s+KEY\s+)?UPDATE|FOR\s+SHARE)\b", re.I)


def tokens(sql: str) -> list[str]:
    """The statement's tokens, comments dropped, literals and quoted names whole."""
    return [t for t in _TOKEN.findall(sql) if not (t.startswith("--") or t.startswith("/*"))]


def _ident(token: str) -> str:
    """A possibly quoted identifier as the bare, lowercased name."""
    if token[:1] in ('"', "`", "["):
        return token[1:-1].replace('""', '"').lower()
    return token.lower()


def _blank(m: re.Match[str]) -> str:
    return m.group() if m.group()[0] in "'\"" else " "


def compact(sql: str) -> str:
    """The statement without comments, whitespace collapsed outside literals."""
    return _WS_OR_LITERAL.sub(_blank, _WS_OR_LITERAL.sub(_blank, sql)).strip()


def normalize(sql: str) -> str:
    """The statement's shape: comments dropped, whitespace collapsed outside
    literals, and runs of
    placeholders (``IN (?, ?, ?)``, multi-row ``VALUES``) folded, so a dynamic list
    of any length is one shape."""
    text = _PARAM_LIST.sub("?, ...", compact(sql))
    return _ROW_LIST.sub("(?, ...), ...", text)


@dataclass(frozen=True, slots=True)
class SqlText:
    """What one statement is: its verb, its shape and the tables it writes."""

    #: The normalized text (the key statistics and the cache use).
    shape: str
    #: "select", "insert", "update", "delete", "transaction", "ddl" or "other".
    kind: str
    #: Tables an INSERT/UPDATE/DELETE writes (lowercased); ``{"*"}`` when a write's
    #: or a DDL statement's effect cannot be pinned to named tables; None for reads.
    writes: frozenset[str] | None


def parse(sql: str) -> SqlText:
    """Classify one statement (done once per distinct text; the observer caches it)."""
    toks = tokens(sql)
    words = [t.lower() for t in toks]
    first = next((w for w in words if w != "("), "")
    shape = normalize(sql)
    if first in _TX_WORDS:
        return SqlText(shape, "transaction", None)
    if first in _DDL_WORDS:
        return SqlText(shape, "ddl", frozenset({ALL_TABLES}))
    if first in ("select", "values"):
        return SqlText(shape, "select", None)
    if first in _WRITE_WORDS or first == "with":
        targets = _write_targets(toks, words)
        if first == "with" and not targets:
            return SqlText(shape, "select", None)
        kind = "insert" if first == "replace" else first
        if first == "with":
            kind = next(w for w in words if w in _WRITE_WORDS)
            kind = "insert" if kind == "replace" else kind
        return SqlText(shape, kind, frozenset(targets) if targets else frozenset({ALL_TABLES}))
    return SqlText(shape, "other", None)


def _write_targets(toks: list[str], words: list[str]) -> set[str]:
    """Tables named after INSERT INTO / REPLACE INTO / UPDATE / DELETE FROM."""
    found: set[str] = set()
    n = len(words)
    for i, w in enumerate(words):
        j: int | None = None
        if w in ("insert", "replace"):
            k = i + 1
            if k < n and words[k] == "or":
                k += 2
            if k < n and words[k] == "into":
                j = k + 1
        elif w == "update":
            if i and words[i - 1] in _NOT_UPDATE_BEFORE:
                continue
            k = i + 1
            if k < n and words[k] == "or":
                k += 2
            if k < n and words[k] == "only":
                k += 1
            j = k
        elif w == "delete":
            k = i + 1
            if k < n and words[k] == "from":
                j = k + 1
                if j < n and words[j] == "only":
                    j += 1
        if j is None:
            continue
        if j >= n or words[j] in _NOT_A_TABLE:
            if w != "update":  # "UPDATE SET" is DO UPDATE's tail, not a verb
                found.add(ALL_TABLES)
            continue
        name = toks[j]
        if j + 2 < n and toks[j + 1] == ".":  # schema.table
            name = toks[j + 2]
        if not re.fullmatch(r"[A-Za-z_][\w$]*|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]", name):
            found.add(ALL_TABLES)
            continue
        found.add(_ident(name))
    return found


def write_targets(sql: str) -> set[str]:
    """Tables the statement (or a trigger or function body) writes, lowercased;
    ``"*"`` among them when a target cannot be named."""
    toks = tokens(sql)
    return _write_targets(toks, [t.lower() for t in toks])


def single_statement(sql: str) -> bool:
    """True when the text holds one statement (a trailing ``;`` allowed)."""
    toks = tokens(sql)
    while toks and toks[-1] == ";":
        toks.pop()
    return ";" not in toks


def names(sql: str) -> set[str]:
    """Every identifier the statement mentions, lowercased (literals excluded)."""
    return {_ident(t) for t in tokens(sql)
            if t[:1] not in ("'",) and (t[:1].isalpha() or t[:1] in ('_', '"', '`', '['))}


def nondeterministic_reason(sql: str) -> str | None:
    """Why the statement's result may differ between two runs with the same
    parameters (a clock, a random generator, a sequence), or None."""
    toks = tokens(sql)
    words = [t.lower() for t in toks]
    for i, w in enumerate(words):
        if w in _CLOCK_LITERALS:
            return f"it reads the clock ({toks[i]})"
        if w in _VOLATILE and (i + 1 >= len(words) or words[i + 1] == "(" or w.startswith(
                "current_") or w in ("localtime", "localtimestamp")):
            return f"it calls {toks[i]}"
        if w in _DATE_FUNCS and i + 1 < len(words) and words[i + 1] == "(":
            args = _call_args(words, i + 1)
            if args == 0 or (w == "strftime" and args == 1):
                return f"{toks[i]}() without a time value reads the clock"
    if not single_statement(sql):
        return "it holds more than one statement"
    return None


def _call_args(words: list[str], open_at: int) -> int:
    """How many top-level arguments the call whose '(' is at ``open_at`` has."""
    depth, args, seen = 0, 0, False
    for w in words[open_at:]:
        if w == "(":
            depth += 1
            if depth == 1:
                continue
        elif w == ")":
            depth -= 1
            if depth == 0:
                return args + (1 if seen else 0)
        elif w == "," and depth == 1:
            args += 1
            continue
        seen = True
    return args + (1 if seen else 0)


def count_params(sql: str) -> int:
    """The number of ``?`` placeholders outside literals and comments."""
    return sum(1 for t in tokens(sql) if t == "?")


def numbered_params(sql: str) -> str:
    """The statement with ``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = iter(range(1, 1 << 30))
    return _TOKEN.sub(lambda m: f"${next(counter)}" if m.group() == "?" else m.group(), sql)


def aliases(sql: str, tables: Iterable[str]) -> dict[str, str]:
    """The statement's references to ``tables``: alias (or the name itself) -> table.

    ``FROM context c``, ``JOIN sessions AS s`` and comma joins alike: any
    mention of a known table followed by a name that is not a keyword.
    """
    known = set(tables)
    toks = tokens(sql)
    words = [t.lower() for t in toks]
    out: dict[str, str] = {}
    n = len(words)
    for i, tok in enumerate(toks):
        name = _ident(tok)
        if name not in known:
            continue
        if i and words[i - 1] == "." and not (i > 1 and words[i - 2] in ("main", "public")):
            continue  # alias.column, not a table
        if i + 1 < n and words[i + 1] in (".", "("):
            continue  # table.column or a function call
        out.setdefault(name, name)
        j = i + 1
        if j < n and words[j] == "as":
            j += 1
        if j < n and re.fullmatch(r"[a-z_]\w*", words[j]) and words[j] not in _CLAUSE_WORDS:
            out[words[j]] = name
    return out


def where_clause(sql: str) -> str:
    """The text of the statement's WHERE (and ON) conditions, roughly: what follows
    WHERE or ON up to GROUP BY / ORDER BY / LIMIT. Used to find filtered columns."""
    parts: list[str] = []
    for m in re.finditer(r"\b(?:WHERE|ON)\b", sql, re.I):
        rest = sql[m.end():]
        end = _WHERE_END.search(rest)
        parts.append(rest[:end.start()] if end else rest)
    return " AND ".join(parts)


def quote_literal(text: str) -> str:
    """A SQL string literal (quotes doubled): for allow-listed JSON paths only."""
    return "'" + text.replace("'", "''") + "'"


def mentioned(sql: str, candidates: Iterable[str]) -> set[str]:
    """Which of ``candidates`` (lowercased names) the statement mentions."""
    have = names(sql)
    return {c for c in candidates if c in have}
