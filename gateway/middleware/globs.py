"""Shell-style globs (`fnmatch`) compiled into one regex, as every middleware and plugin uses them."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable


def compile_globs(globs: Iterable[str]) -> re.Pattern[str]:
    """One pattern whose `match` is true when any glob matches the whole string.

    Case-sensitive (lower-case both sides for a case-insensitive match); no globs match nothing.
    `fnmatch.translate` anchors the end; `match` anchors the start.
    """
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or r"(?!)")
