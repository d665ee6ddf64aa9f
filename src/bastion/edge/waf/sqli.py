"""SQL injection detection by token fingerprints (the libinjection idea, our own design).

A regex over SQL keywords flags prose ("select a union rep or an agent") and misses
obfuscation (``1'or'1'='1``, ``UNION/**/SELECT``, ``/*!50000select*/``, ``’ or ‘1’=‘1``). So a
value is *tokenized* the way a SQL lexer (MySQL, PostgreSQL, MSSQL, SQLite, Oracle) would,
each token reduced to a one-letter class, and the decision is taken on that shape:

- classes: ``s`` string, ``1`` number or NULL/TRUE/FALSE, ``n`` name, ``v`` variable
  (``@x``, ``@@x``), ``f`` function call, ``F`` dangerous function or procedure (SLEEP,
  BENCHMARK, pg_sleep, xp_cmdshell ...), ``k`` keyword, ``E`` statement keyword (SELECT,
  DROP ...), ``U`` UNION, ``B`` ORDER/GROUP BY, ``T`` WAITFOR, ``&`` logic (AND, OR, ||,
  HAVING), ``o`` operator (incl. LIKE, IN, IS ...), ``!`` NOT, ``( ) , ;``, ``c`` comment,
  ``?`` anything else.
- folding: whitespace and comments followed by more code vanish (``/**/`` between keywords),
  MySQL ``/*! ... */`` bodies are code, UNION ALL/DISTINCT is one ``U``, ORDER BY one ``B``,
  a sign before a number is part of it, ``a.b..c`` is one name.
- contexts: the value is read as-is, and, when it holds that quote, as if it followed a
  ``'`` or a ``"`` (the injection point is inside a quoted literal), like libinjection.
- rules (our own, not libinjection's fingerprint list): anchored at the start of a context,
  a literal followed by a logic operator and a comparison (``s&sos``, ``1&1o1``), by a
  dangerous call, by a stacked statement that parses (``;`` DROP TABLE / SELECT ... /
  EXEC xp_...), ORDER BY; anywhere in the first tokens, UNION [ALL] SELECT followed by a
  select list, WAITFOR DELAY, or a dangerous call where an expression goes. The weaker
  shapes (``sc``: ``admin'--``; ``sos``: ``'='``) also want the closed literal to be one
  short word (an id, a name), so a line of code with quotes in it does not match.

Bounded work: each context stops after ``MAX_TOKENS`` raw tokens or ``MAX_KEPT`` folded
ones (``MAX_KEPT_QUOTED`` when the value holds no ``;``, ``(``, UNION or WAITFOR, and sooner
when a word follows the literal a quote closed);
the scan inside one token (a string, comment or name) uses ``str.find`` or a
single-character-class regex, both linear, so a call costs O(n) C-level steps plus
O(MAX_TOKENS) Python steps: about 20-30 µs for 100 bytes, 40-50 µs for 2 KiB, a few ms for
1 MiB (backslash escapes inside one string literal are the one per-character Python loop).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["detect_sqli", "fingerprint"]

MAX_TOKENS = 48
"""Raw tokens (comments included) read per context before the scan stops."""

MAX_KEPT = 16
"""Folded tokens kept per context; the rules look no further."""

MAX_KEPT_QUOTED = 10
"""Folded tokens kept when the value has no ``;``, ``(``, UNION or WAITFOR: then only the
rules anchored at the start can match."""

# Single-character-class patterns: matching them is linear and cannot backtrack.
_WS = re.compile(r"[\s\x00]*")
_WORD = re.compile(r"[\w$.]*")
_DIGITS = re.compile(r"[0-9]*")
_HEX = re.compile(r"[0-9A-Fa-f]*")
_BIN = re.compile(r"[01]*")
_RUNS = {q: re.compile(re.escape(q) + "*") for q in "'\"`"}

_VALUES = frozenset("1snv")

_KEYWORDS: dict[str, str] = {
    # statements
    **dict.fromkeys(
        "select insert update delete drop create alter truncate exec execute declare "
        "shutdown replace grant revoke merge".split(),
        "E",
    ),
    **dict.fromkeys("union except intersect minus".split(), "U"),
    **dict.fromkeys("and or xor having".split(), "&"),
    **dict.fromkeys(
        "like rlike regexp in is between sounds div mod collate escape glob ilike similar".split(),
        "o",
    ),
    "not": "!",
    **dict.fromkeys("null true false".split(), "1"),
    "waitfor": "T",
    **dict.fromkeys(
        "from into table set values limit offset as on join case when then else end "
        "distinct distinctrow all top delay time procedure database schema login view "
        "index trigger outfile dumpfile infile load data exists any some asc desc by "
        "inner outer cross natural straight_join function column where returning "
        "partition using".split(),
        "k",
    ),
}

# Keywords that MySQL also knows as functions: ``replace(...)`` is a call, not a statement.
_CALLABLE_KEYWORDS = frozenset(("replace", "insert", "mod", "exists", "values", "any", "some"))

_DANGER_CALLS = frozenset(
    """sleep benchmark pg_sleep pg_sleep_for pg_sleep_until load_file extractvalue updatexml
    openrowset opendatasource openquery receive_message get_host_address get_host_name
    randomblob sys_eval sys_exec lo_import lo_export pg_read_file pg_read_binary_file
    pg_ls_dir dblink dblink_connect name_const gtid_subset xmltype load_extension
    dbms_pipe dbms_lock utl_inaddr utl_http ctxsys dbms_xmlgen""".split()
)
_DANGER_PACKAGES = frozenset("dbms_pipe dbms_lock utl_inaddr utl_http ctxsys dbms_xmlgen".split())
# Procedures that are dangerous named at all, call syntax or not (``EXEC xp_cmdshell 'dir'``).
_DANGER_PROCS = frozenset(
    """xp_cmdshell xp_dirtree xp_fileexist xp_regread xp_regwrite xp_servicecontrol
    xp_availablemedia xp_subdirs sp_oacreate sp_oamethod sp_executesql sp_makewebtask
    sp_configure sp_addlogin sp_addsrvrolemember sp_password""".split()
)

_OBJECTS = frozenset(
    "table database schema user login procedure function view index trigger column".split()
)
_COMPARE = frozenset(("=", "<", ">", "<=", ">=", "<>", "!=", "<=>", "||", "like", "rlike",
                      "regexp", "in", "is", "between", "sounds", "glob", "ilike", "similar"))
_QUOTES = str.maketrans("\u2018\u2019\u00b4\u02bc\u2032\u201c\u201d", "'''''\"\"")
_ARITH = frozenset("+-*/%")
_SHORT = 40  # string literals up to this length keep their text (for _short_literal)
_LONG = " (long) "
_OPS3 = ("<=>",)
_OPS2 = ("<>", "!=", "<=", ">=", "||", "&&", "::", ":=", "<<", ">>", "->", "!<", "!>")


class Token(NamedTuple):
    """One folded token: its class letter and its lowercased text (a comment's body)."""

    cls: str
    text: str


class _Lexer:
    """Reads the tokens of one context; see the module docstring for classes and folding."""

    def __init__(self, s: str, quote: str, keep: int = MAX_KEPT) -> None:
        self.s = s
        self.n = len(s)
        self.out: list[Token] = []
        self.complete = False
        self.versioned = False
        self.keep = keep
        self.parens = 0  # "(" and ")" do not count against ``keep`` (MAX_TOKENS bounds them)
        self._run(quote)

    def _emit(self, cls: str, text: str = "") -> None:
        out = self.out
        if cls != "c":
            while out and out[-1].cls == "c":  # a comment with code after it is whitespace
                out.pop()
            if out:
                last = out[-1]
                if last.cls == "U" and text in ("all", "distinct"):
                    return
                if text == "by" and last.cls == "n" and last.text in ("order", "group"):
                    out[-1] = Token("B", last.text + " by")
                    return
        out.append(Token(cls, text))

    def _string_end(self, i: int, q: str) -> int:
        """Index after the literal closing ``q`` (doubled quotes and backslashes escape)."""
        s, n = self.s, self.n
        j = s.find(q, i)
        b = s.find("\\", i)
        while True:
            if b != -1 and (j == -1 or b < j):
                i = b + 2
                b = s.find("\\", i) if i < n else -1
                if j != -1 and j < i:
                    j = s.find(q, i)
                continue
            if j == -1:
                return n
            run = _RUNS[q].match(s, j).end() - j  # type: ignore[union-attr]
            if run % 2:  # pairs of quotes are escaped quotes; an odd one closes
                return j + run
            i = j + run
            j = s.find(q, i)
            if b != -1 and b < i:
                b = s.find("\\", i)

    def _next_is_paren(self, i: int) -> bool:
        s, n = self.s, self.n
        if i >= n or s[i] == "(":
            return i < n
        if not (s[i].isspace() or s[i] == "/"):
            return False
        for _ in range(4):  # whitespace and a few /* */ comments between a name and "("
            i = _WS.match(s, i).end()  # type: ignore[union-attr]
            if s.startswith("/*", i) and not s.startswith("/*!", i):
                e = s.find("*/", i + 2)
                if e == -1:
                    return False
                i = e + 2
                continue
            break
        return i < n and s[i] == "("

    def _word(self, i: int) -> int:
        s = self.s
        j = _WORD.match(s, i).end()  # type: ignore[union-attr]
        low = s[i:j].lower()
        if j < self.n and s[j] in "'\"" and (low in ("n", "x", "b", "e") or low.startswith("_")):
            self._emit("s")  # N'..', X'..', _utf8'..'
            return self._string_end(j + 1, s[j])
        if "." in low:
            last = low.rstrip(".").rsplit(".", 1)[-1]
            head = low.split(".", 1)[0]
        else:
            last = head = low
        if "_" in last and last in _DANGER_PROCS:
            self._emit("F", last)
            return j
        kw = _KEYWORDS.get(low)
        call = self._next_is_paren(j)
        if kw is not None and not (call and low in _CALLABLE_KEYWORDS):
            self._emit(kw, low)
        elif call:
            # a dotted call is dangerous by its package (dbms_lock.sleep), not "time.sleep"
            danger = head in _DANGER_PACKAGES if "." in low else last in _DANGER_CALLS
            self._emit("F" if danger else "f", last)
        else:
            self._emit("n", low)
        return j

    def _number(self, i: int) -> int:
        s, n = self.s, self.n
        if s[i] in "+-":
            i += 1
        if s.startswith(("0x", "0X"), i):
            j = _HEX.match(s, i + 2).end()  # type: ignore[union-attr]
        elif s.startswith(("0b", "0B"), i):
            j = _BIN.match(s, i + 2).end()  # type: ignore[union-attr]
        else:
            j = _DIGITS.match(s, i).end()  # type: ignore[union-attr]
            if j < n and s[j] == ".":
                j = _DIGITS.match(s, j + 1).end()  # type: ignore[union-attr]
            if j < n and s[j] in "eE":
                k = j + 1
                if k < n and s[k] in "+-":
                    k += 1
                e = _DIGITS.match(s, k).end()  # type: ignore[union-attr]
                if e > k:
                    j = e
        self._emit("1")
        return j

    def _step(self, i: int) -> int:  # noqa: C901 - one branch per lexical form
        s, n = self.s, self.n
        ch = s[i]
        if ch.isalpha() or ch == "_":  # the common case first
            return self._word(i)
        nxt = s[i + 1] if i + 1 < n else ""
        if ch in "'\"":
            end = self._string_end(i + 1, ch)
            self._emit("s", s[i + 1 : end - 1] if end - i <= _SHORT + 2 else _LONG)
            return end
        if ch == "`" or ch == "[":
            e = s.find("`" if ch == "`" else "]", i + 1)
            self._emit("n")
            return n if e == -1 else e + 1
        if ch == "/" and nxt == "*":
            if i + 2 < n and s[i + 2] == "!":  # MySQL versioned comment: its body is code
                self.versioned = True
                return _DIGITS.match(s, i + 3).end()  # type: ignore[union-attr]
            e = s.find("*/", i + 2)
            self._emit("c", s[i + 2 : n if e == -1 else e])
            return n if e == -1 else e + 2
        if ch == "*" and nxt == "/" and self.versioned:
            self.versioned = False
            return i + 2
        if (ch == "-" and nxt == "-") or ch == "#":
            e = s.find("\n", i)
            start = i + (1 if ch == "#" else 2)
            self._emit("c", s[start : n if e == -1 else e])
            return n if e == -1 else e + 1
        if ch.isdigit() or (ch == "." and nxt.isdigit()):
            return self._number(i)
        if ch in "+-" and (nxt.isdigit() or nxt == "."):
            if not self.out or self.out[-1].cls not in "1snvf)":
                return self._number(i)
        if ch == "@":
            j = i + 2 if nxt == "@" else i + 1
            if j < n and s[j] in "'\"`":
                end = self._string_end(j + 1, s[j])
            else:
                end = _WORD.match(s, j).end()  # type: ignore[union-attr]
            self._emit("v" if end > j else "?")
            return end
        if ch == "$" and nxt == "$":  # PostgreSQL dollar quoting
            e = s.find("$$", i + 2)
            self._emit("s")
            return n if e == -1 else e + 2
        if ch == "$" or (ch.isalnum() and not ch.isdigit()):
            return self._word(i)
        if ch in "(),;":
            self.parens += ch in "()"
            self._emit(ch, ch)
            return i + 1
        for op in _OPS3:
            if s.startswith(op, i):
                self._emit("o", op)
                return i + 3
        two = s[i : i + 2]
        if two in _OPS2:
            self._emit("&" if two in ("&&", "||") else "o", two)
            return i + 2
        if ch in "!~":
            self._emit("!", ch)
            return i + 1
        if ch in "=<>+-*/%^|&":
            self._emit("o", ch)
            return i + 1
        self._emit("?", ch)
        return i + 1

    def _run(self, quote: str) -> None:
        s, n = self.s, self.n
        i = 0
        if quote:
            i = self._string_end(0, quote)
            self._emit("s", s[: i - 1] if i <= _SHORT + 1 else _LONG)
        for _ in range(MAX_TOKENS):
            i = _WS.match(s, i).end()  # type: ignore[union-attr]
            if i >= n:
                self.complete = True
                return
            if len(self.out) - self.parens >= self.keep:
                return
            out = self.out
            if quote and len(out) >= 3 and out[1].cls == "n" and out[-1].cls != "c":
                if out[1].text not in ("order", "group"):
                    return  # a word right after the closed literal: prose, no rule starts so
            i = self._step(i)
        self.complete = _WS.match(s, i).end() >= n  # type: ignore[union-attr]


def _at(core: list[Token], i: int) -> Token:
    return core[i] if 0 <= i < len(core) else Token("$", "")


def _select_list(core: list[Token], k: int) -> bool:
    """``core[k:]`` looks like the select list after SELECT (not prose)."""
    t = _at(core, k)
    if t.cls in "fFvE" or (t.cls == "o" and t.text == "*") or (t.cls == "k" and t.text == "case"):
        return True
    if t.cls == "k" and t.text in ("all", "distinct", "distinctrow", "top"):
        return _select_list(core, k + 1)
    after = _at(core, k + 1)
    if t.cls in "1s":
        return after.cls in ",kc$U&o;" or after.cls == "1"
    if t.cls == "n":
        return after.cls in ",c" or (after.cls == "k" and after.text in ("from", "as", "into"))
    return False


def _statement(core: list[Token], k: int) -> bool:
    """``core[k]`` starts a SQL statement that parses, so ``;`` before it is stacking."""
    t, a, b = _at(core, k), _at(core, k + 1), _at(core, k + 2)
    if t.cls == "T" or t.cls == "F":
        return True
    if t.cls != "E":
        return False
    verb = t.text
    if verb == "select":
        return _select_list(core, k + 1)
    if verb in ("insert", "replace"):
        return a.cls == "k" and a.text == "into"
    if verb == "update":
        return a.cls == "n" and b.cls == "k" and b.text == "set"
    if verb == "delete":
        return a.cls == "k" and a.text == "from"
    if verb in ("drop", "create", "alter", "truncate"):
        return (a.cls == "k" or a.cls == "n") and a.text in _OBJECTS
    if verb in ("exec", "execute"):
        if a.cls == "n" and a.text == "immediate":  # Oracle EXECUTE IMMEDIATE '...'
            return True
        return a.cls in "Fvs" or (a.cls == "n" and ("." in a.text or a.text[:3] in ("sp_",
                                                                                    "xp_")))
    if verb == "declare":
        return a.cls == "v"
    if verb == "shutdown":
        return a.cls in "c$"
    return False


def _short_comment(body: str) -> bool:
    """A trailing comment that ends an injection (``--``, ``-- -``, ``#``, ``--+``), not a
    remark or a selector (``#main``) after a quote."""
    return len(body) <= 32 and not any(c.isalnum() for c in body)


def _short_literal(tok: Token) -> bool:
    """The literal the input closed is short and one word (an id, a name: ``admin'--``),
    not a line of code (``x = f('/') + '/'``); the weaker rules want that."""
    text = tok.text
    return tok.cls == "s" and len(text) <= 24 and all(c.isalnum() or c in "_@.-+/" for c in text)


def _anchored(core: list[Token], toks: list[Token], quoted: bool) -> bool:  # noqa: C901
    """Rules at the start of the context: what follows the literal the input closed."""
    head = core[0].cls if core else "$"
    if head in "s1vn":
        x, r = head, 1
        e = 1
        for _ in range(3):  # an arithmetic expression closes the literal: "O-1 OR 2>1"
            op, val = _at(core, e), _at(core, e + 1)
            if op.cls != "o" or op.text not in _ARITH or val.cls not in _VALUES:
                break
            e += 2
        if _at(core, e).cls in "&;":
            r = e
    elif head in "&oB;TU" or (head == "k" and core[0].text == "where"):
        x, r = "", 0  # the value starts mid-expression: "or 1=1--"
    else:
        return False
    a, b, c, d = (_at(core, r + i) for i in range(4))
    short = quoted and x == "s" and _short_literal(core[0])
    if a.cls == "k" and a.text == "where":
        a = Token("&", "where")
    if a.cls == "&":
        if b.cls == "F":
            return x != "n"
        if b.cls in "fE":
            return x in ("s", "1") or (b.cls == "E" and x in ("", "n", "v")
                                        and _select_list(core, r + 2))
        if b.cls in _VALUES:
            if c.cls == "o":
                if d.cls == "k" and d.text in ("all", "any", "some"):
                    return x == "s" or b.cls in "1sv"
                if d.cls not in "1snvfFE" or (d.cls == "n" and c.text.isalpha()):
                    return False  # "and 3 in the docs": IN/LIKE/IS want a value, not a word
                if x in ("n", ""):  # no literal was closed: "x or 1=1", not "ascii and utf-8"
                    if c.text not in _COMPARE:
                        return False
                    tail = _at(core, r + 4).cls
                    return b.cls in "1sv" or d.cls in "fFE" or (x == "" and tail in "c$")
                return True
            if c.cls in "c$&;UB" and short and b.cls in "1sv":
                if c.cls == "$":  # "' or '1": only where the value began inside a literal
                    return quoted
                return c.cls != "c" or _short_comment(c.text) or quoted
            if c.cls == "c" and b.cls in "1sv" and x in ("1", ""):
                return _short_comment(c.text)
            if c.cls in "c$" and b.text in ("true", "false") and x in ("1", ""):
                return True
        return False
    if a.cls == "o":
        if x == "s":
            if b.cls in "FE" or (b.cls == "f" and short and not a.text.isalpha()):
                return True
            if b.cls in "1sv" and short:  # "'='" probes, "'*1 or '", not "'/' from a '/>'"
                if c.cls == "$":
                    return a.text in _COMPARE
                return c.cls in "&c;U"
        if x == "" and b.cls == "E" and b.text == "select":
            return _select_list(core, r + 2)
        return x in ("1", "v") and b.cls in "FE"
    if a.cls == "c":
        return short and quoted and _short_comment(a.text)
    if a.cls == ";":
        if b.cls in "c$":
            return short and quoted
        return x in ("s", "1", "") and _statement(core, r + 1)
    if a.cls == "B":
        if b.cls == "F":
            return True
        if b.cls == "1" and x in ("1", "") and c.cls in "c$,":  # "ORDER BY 3", "1 ORDER BY 1,2"
            return True
        return b.cls in "1nfv" and (x == "s" or (x in ("1", "") and c.cls == "c"))
    if a.cls == "E" and a.text in ("exec", "execute"):
        return x == "s" and b.cls == "F"
    if a.cls == "T":
        return b.cls == "k" and b.text in ("delay", "time")
    if a.cls == "k" and a.text == "limit" and b.cls == "1":  # "1 limit 1 into @a"
        return c.cls in ",c" or (c.cls == "k" and c.text in ("into", "offset", "procedure"))
    if a.cls == "k" and a.text == "into":
        return x == "s" and b.text in ("outfile", "dumpfile")
    return False


def _judge(toks: list[Token], quoted: bool, complete: bool) -> bool:
    core = [t for t in toks if t.cls not in "()!"]
    if not complete:  # the scan stopped early: what follows is not the end of input
        core.append(Token("~", ""))
    if _anchored(core, toks, quoted):
        return True
    prev = "^"
    for t in toks:  # a dangerous call where an expression goes: ",SLEEP(5)", "(BENCHMARK("
        if t.cls == "F" and prev in "^&o,(;EBk":
            return True
        prev = t.cls
    for i, t in enumerate(core):
        if t.cls == "U":
            nxt = _at(core, i + 1)
            if nxt.cls == "E" and nxt.text == "select" and _select_list(core, i + 2):
                return True
        elif t.cls == ";" and i <= 5 and _statement(core, i + 1):
            return True
        elif t.cls == "T":  # WAITFOR DELAY '0:0:5' is SQL Server's sleep, wherever it sits
            nxt, arg = _at(core, i + 1), _at(core, i + 2)
            if nxt.cls == "k" and nxt.text in ("delay", "time") and arg.cls in "s1v":
                return True
    return False


def fingerprint(value: str, quote: str = "") -> str:
    """The folded token classes of ``value`` read after ``quote`` ("" for as-is)."""
    return "".join(t.cls for t in _Lexer(value, quote).out)


def detect_sqli(value: str) -> str | None:
    """Return the fingerprint (e.g. ``"s&1o1c"``) if ``value`` is SQL injection, else None.

    The value is tried as-is, then after a ``'`` and after a ``"`` when it holds that quote.
    Never raises; cost is linear in ``len(value)`` (see the module docstring).
    """
    if not value.isascii():  # typographic quotes that lax charset conversions make ASCII
        value = value.translate(_QUOTES)
    # Past the anchored rules' reach only UNION, ";", WAITFOR and calls matter: without them,
    # stop early.
    deep = ";" in value or "(" in value
    if not deep:
        low = value.lower()
        deep = any(w in low for w in ("union", "except", "intersect", "minus", "waitfor"))
    for quote in ("", "'", '"'):
        if quote and quote not in value:
            continue
        keep = MAX_KEPT if deep else MAX_KEPT_QUOTED + (0 if quote else 2)
        lexer = _Lexer(value, quote, keep)
        if _judge(lexer.out, bool(quote), lexer.complete):
            return "".join(t.cls for t in lexer.out)[:8]
    return None
