"""``# noqa`` and ``# noqa: GRD001,GRD002`` comments (flake8 semantics)."""
from __future__ import annotations

import re
from typing import Optional

_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_SEPARATOR = re.compile(r"[,\s]+")


def suppressed_codes(line: str) -> Optional[frozenset[str]]:
    """None: no noqa. Empty set: a bare ``# noqa`` (suppress all). Otherwise the listed codes."""
    if "#" not in line:
        return None
    match = _NOQA.search(line)
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return frozenset()
    return frozenset(code.upper() for code in _SEPARATOR.split(codes.strip()) if code)


def is_suppressed(line: str, code: str) -> bool:
    codes = suppressed_codes(line)
    if codes is None:
        return False
    return not codes or any(code.startswith(c) for c in codes)
