"""Transformations: the normalisations attackers rely on a backend to perform, applied to a
value before the rules see it (ModSecurity reference manual v2, "Transformation functions";
the names are ModSecurity's, so a SecLang loader maps ``t:name`` onto them one to one).

Every function is total (any ``str`` in, a ``str`` out, never an exception) and linear in
its input; none uses a backtracking regular expression. Decoders leave what they cannot
decode as it was, as ModSecurity does.
"""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Callable, Sequence
from urllib.parse import unquote_to_bytes

Transform = Callable[[str], str]

HEX = frozenset("0123456789abcdefABCDEF")
# overlong and alternative encodings of "/", "\" and "." (the classic IIS / Tomcat
# traversal bypasses: %c0%af, %e0%80%af, %c1%9c, %c0%ae), and their full-width forms
OVERLONG = ((b"\xe0\x80\xaf", b"/"), (b"\xe0\x80\xae", b"."), (b"\xc0\xaf", b"/"),
            (b"\xc0\xae", b"."), (b"\xc1\x9c", b"\\"), (b"\xc0\x2f", b"/"),
            (b"\xc0\x5c", b"\\"), (b"\xc1\x1c", b"\\"))
WIDE = str.maketrans({"\uff0e": ".", "\u2215": "/", "\uff0f": "/", "\uff3c": "\\",
                      "\u2044": "/", "\u2216": "\\", "\ufe68": "\\"})


def _bytes_to_text(data: bytes) -> str:
    for bad, good in OVERLONG:
        if bad in data:
            data = data.replace(bad, good)
    text = data.decode("utf-8", "replace")
    return text if text.isascii() else text.translate(WIDE)


def _percent_u(value: str) -> str:
    """``%uHHHH`` (IIS) to the character, other text untouched."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("%", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if (j + 5 < n and value[j + 1] in "uU" and all(c in HEX for c in value[j + 2:j + 6])):
            out.append(chr(int(value[j + 2:j + 6], 16)))
            i = j + 6
        else:
            out.append("%")
            i = j + 1
    return "".join(out)


def url_decode(value: str, *, plus: bool = True) -> str:
    """Percent-decoding as a backend does it (``+`` is a space in query strings and forms);
    invalid escapes are kept; overlong UTF-8 forms of ``/ \\ .`` decode to those."""
    if "%" not in value:
        return value.replace("+", " ") if plus and "+" in value else value
    if plus:
        value = value.replace("+", " ")
    if "%u" in value or "%U" in value:
        value = _percent_u(value)
    return _bytes_to_text(unquote_to_bytes(value.encode("utf-8", "surrogatepass")))


def url_decode_uni(value: str) -> str:
    """``urlDecodeUni``: %XX, %uHHHH and ``+``."""
    return url_decode(value)


def html_entity_decode(value: str) -> str:
    """``htmlEntityDecode``: named and numeric references, with or without ``;`` (the
    standard library's decoder is a single linear pass)."""
    return html.unescape(value) if "&" in value else value


def js_decode(value: str) -> str:
    r"""``jsDecode``: \xHH, \uHHHH, \OOO (octal), \n-style and \c escapes."""
    if "\\" not in value:
        return value
    simple = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v", "a": "\a"}
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("\\", i)
        if j < 0 or j + 1 >= n:
            out.append(value[i:])
            break
        out.append(value[i:j])
        c = value[j + 1]
        if c == "x" and j + 3 < n and all(h in HEX for h in value[j + 2:j + 4]):
            out.append(chr(int(value[j + 2:j + 4], 16)))
            i = j + 4
        elif c == "u" and len(value[j + 2:j + 6]) == 4 and all(h in HEX
                                                              for h in value[j + 2:j + 6]):
            out.append(chr(int(value[j + 2:j + 6], 16)))
            i = j + 6
        elif c in "01234567":
            k = j + 1
            while k < n and k < j + 4 and value[k] in "01234567":
                k += 1
            out.append(chr(int(value[j + 1:k], 8) & 0xFF))
            i = k
        else:
            out.append(simple.get(c, c))
            i = j + 2
    return "".join(out)


def css_decode(value: str) -> str:
    r"""``cssDecode``: \H to \HHHHHH (one following space is part of the escape) and \c."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("\\", i)
        if j < 0 or j + 1 >= n:
            out.append(value[i:] if j < 0 else value[i:j])
            break
        out.append(value[i:j])
        k = j + 1
        while k < n and k < j + 7 and value[k] in HEX:
            k += 1
        if k > j + 1:
            code = int(value[j + 1:k], 16)
            out.append(chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
                       else "\ufffd")
            if k < n and value[k] in " \t\n\r\f":
                k += 1
            i = k
        elif value[k] == "\n":
            i = k + 1  # an escaped newline is removed
        else:
            out.append(value[k])
            i = k + 1
    return "".join(out)


def lowercase(value: str) -> str:
    return value.lower()


def compress_whitespace(value: str) -> str:
    """``compressWhitespace``: every run of whitespace (incl. NBSP) becomes one space."""
    if not any(c.isspace() for c in value):
        return value
    parts = value.replace("\xa0", " ").split()
    lead = " " if value[:1].isspace() else ""
    trail = " " if value[-1:].isspace() else ""
    return lead + " ".join(parts) + trail


def remove_whitespace(value: str) -> str:
    return "".join(value.replace("\xa0", " ").split())


def remove_nulls(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def replace_comments(value: str) -> str:
    """``replaceComments``: each C-style ``/* ... */`` (or unterminated ``/*`` to the end)
    becomes one space."""
    if "/*" not in value:
        return value
    out: list[str] = []
    i = 0
    while True:
        j = value.find("/*", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        out.append(" ")
        k = value.find("*/", j + 2)
        if k < 0:
            break
        i = k + 2
    return "".join(out)


def normalize_path(value: str) -> str:
    """``normalizePath``: collapses ``//`` and ``/./`` and resolves ``x/../``; back-
    references that cannot be resolved (at the start) are kept, as ModSecurity keeps them."""
    if "/" not in value:
        return value
    absolute = value.startswith("/")
    trailing = value.endswith("/") or value.endswith("/.") or value.endswith("/..")
    stack: list[str] = []
    for seg in value.split("/"):
        if seg in ("", "."):
            continue
        if seg == ".." and stack and stack[-1] != "..":
            stack.pop()
        elif seg == ".." and absolute and not stack:
            stack.append("..")
        else:
            stack.append(seg)
    out = ("/" if absolute else "") + "/".join(stack)
    if trailing and stack:
        out += "/"
    return out


def normalize_path_win(value: str) -> str:
    """``normalizePathWin``: backslashes become slashes, then ``normalizePath``."""
    return normalize_path(value.replace("\\", "/"))


def base64_decode(value: str) -> str:
    """``base64Decode``: standard or URL-safe alphabet, padding optional; what does not
    decode is returned unchanged."""
    raw = value.strip()
    if not raw:
        return value
    raw += "=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return value
    return data.decode("utf-8", "replace")


def utf8_to_unicode(value: str) -> str:
    """``utf8toUnicode``: every non-ASCII character as ``%uHHHH`` (full-width and other
    look-alike forms of ``/ \\ .`` first become the ASCII characters they mimic)."""
    if value.isascii():
        return value
    value = value.translate(WIDE)
    return "".join(c if c.isascii() else
                   f"%u{ord(c):04x}" if ord(c) <= 0xFFFF else f"%u{ord(c):06x}"
                   for c in value)


def cmd_line(value: str) -> str:
    """``cmdLine``: deletes ``\\ " ' ^``, deletes spaces before ``/`` and ``(``, makes
    ``,`` and ``;`` spaces, compresses whitespace, lower-cases (ModSecurity's definition)."""
    out: list[str] = []
    space = False
    for c in value:
        if c in "\\\"'^":
            continue
        if c in " \t\r\n,;":
            space = True
            continue
        if c in "/(":
            space = False
        elif space:
            out.append(" ")
            space = False
        out.append(c.lower())
    if space:
        out.append(" ")
    return "".join(out)


def shell_unquote(value: str) -> str:
    """Bastion's shell normalisation: deletes the quoting shells ignore (``c'a't``,
    ``c\\at``, ``c^at``, ``$@``), makes ``${IFS}``/``$IFS`` spaces, lower-cases; unlike
    ``cmdLine`` it keeps ``;`` and ``,`` (command separators are evidence)."""
    if not any(c in value for c in "\\\"'^$"):
        return value.lower()
    low = value.lower()
    for ifs in ("${ifs}", "$ifs$9", "$ifs"):
        low = low.replace(ifs, " ")
    low = low.replace("$@", "").replace("$*", "")
    return "".join(c for c in low if c not in "\\\"'^")


def none(value: str) -> str:
    return value


TRANSFORMS: dict[str, Transform] = {
    "none": none,
    "urlDecode": url_decode,
    "urlDecodeUni": url_decode_uni,
    "htmlEntityDecode": html_entity_decode,
    "jsDecode": js_decode,
    "cssDecode": css_decode,
    "lowercase": lowercase,
    "compressWhitespace": compress_whitespace,
    "removeWhitespace": remove_whitespace,
    "removeNulls": remove_nulls,
    "replaceComments": replace_comments,
    "normalizePath": normalize_path,
    "normalisePath": normalize_path,
    "normalizePathWin": normalize_path_win,
    "normalisePathWin": normalize_path_win,
    "base64Decode": base64_decode,
    "utf8toUnicode": utf8_to_unicode,
    "cmdLine": cmd_line,
    "shellUnquote": shell_unquote,
}


def check_chain(names: Sequence[str]) -> tuple[str, ...]:
    """The chain as a tuple, ``none`` dropped; ``ValueError`` naming an unknown one."""
    for name in names:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transformation {name!r}")
    return tuple(n for n in names if n != "none")


def apply(chain: Sequence[str], value: str) -> str:
    for name in chain:
        value = TRANSFORMS[name](value)
    return value
