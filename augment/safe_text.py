"""One escaping rule for text that comes from the user's data (class names, file names, paths).

Such text reaches Markdown (report.md, Prefect artifacts), HTML (report.html, rendered from that
Markdown with raw HTML off) and matplotlib figures. Each function returns text that shows the
name as it is and can change nothing around it: no markup, no table cell boundary, no mathtext.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# The characters that start or end Markdown inline markup, a table cell, an entity, GitHub's math
# or raw HTML; backslash-escaped they render as themselves (CommonMark escapes any ASCII punctuation).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~$#!])")


# Control and format characters, line and paragraph separators: a newline in a folder name, a
# right-to-left override (U+202E) or a zero-width space that would disguise a name in the report.
_INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp"))


def storable(text: str) -> str:
    """A path as printable, storable text: bytes that are not UTF-8 (a file name need not be) as
    backslash escapes, e.g. caf\\xe9.png."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file system decoding made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(value: object) -> str:
    """storable(str(value)) with invisible characters (_INVISIBLE) as \\xNN or \\uNNNN."""
    text = storable(str(value))
    return "".join(c if unicodedata.category(c) not in _INVISIBLE else (f"\\x{ord(c):02x}" if ord(c) < 256 else
                   f"\\u{ord(c):04x}") for c in text)


def md(value: object) -> str:
    """Text for Markdown, a table cell included: printable, every markup character escaped."""
    return _MD_SPECIAL.sub(r"\\\1", printable(value))


def fence(text: str) -> str:
    """A code fence longer than any run of backticks in text (a path with ``` cannot close it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def mpl(value: object) -> str:
    """Text for a matplotlib label: printable, '$' escaped so that it is never parsed as mathtext."""
    return printable(value).replace("$", r"\$")


def file_label(label: str, most: int = 64) -> str:
    """A class name as part of a file name: itself when it is at most `most` bytes, else its first
    characters and a digest (a class folder may use 255 bytes; a file named after it, plus the
    atomic writer's temporary suffix, would not fit)."""
    raw = label.encode("utf-8", "surrogateescape")
    if len(raw) <= most:
        return label
    head = raw[: most - 17].decode("utf-8", "ignore")
    return f"{head}-{hashlib.sha256(raw).hexdigest()[:16]}"
