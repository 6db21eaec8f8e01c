"""A `Masker`: the detectors one configuration turns on, each with its action, applied to strings.

The fast path matters more than anything else here: almost every string the gateway relays holds
nothing sensitive. One pre-filter pass over the text (substring anchors, one lower-casing, one
digit test and one upper-case test shared by all detectors) decides which detectors can possibly
match; only those run their pattern. A string with no finding is returned as the same object, so
callers can tell "unchanged" by identity and copy nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal, get_args

from gateway.masking.detectors import DETECTORS, Detector

Action = Literal["redact", "partial", "hash", "block", "allow"]
ACTIONS: tuple[str, ...] = get_args(Action)
# On overlapping findings the strictest action wins.
_STRICTNESS = {"partial": 0, "hash": 1, "redact": 2, "block": 3}

_DIGIT = re.compile(r"\d", re.ASCII)
_UPPER_PAIR = re.compile(r"[A-Z][A-Z]")
_MIN_LENGTH = 7  # the shortest thing any detector matches ("1.2.3.4")


class Blocked(Exception):
    """A detector whose action is `block` matched. Carries the detector's name, never the value."""

    def __init__(self, detector: str) -> None:
        super().__init__(detector)
        self.detector = detector


class Masker:
    def __init__(self, actions: Mapping[str, Action], *, salt: str = "") -> None:
        self.actions = {d.name: actions.get(d.name, "allow") for d in DETECTORS}
        self._active: list[tuple[int, Detector, str]] = [
            (order, d, self.actions[d.name])
            for order, d in enumerate(DETECTORS)
            if self.actions[d.name] != "allow"
        ]
        self._salt = salt.encode()
        self.enabled = bool(self._active)

    def __repr__(self) -> str:
        on = ", ".join(f"{d.name}={a}" for _, d, a in self._active)
        return f"Masker({on})"

    def candidates(self, text: str) -> list[tuple[int, Detector, str]]:
        """The pre-filter: the active detectors that can possibly match `text`."""
        lower: str | None = None
        digit: bool | None = None
        upper: bool | None = None
        out = []
        for entry in self._active:
            d = entry[1]
            if d.anchors:
                hit = any(a in text for a in d.anchors)
            elif d.lower_anchors:
                if lower is None:
                    lower = text.lower()
                hit = any(a in lower for a in d.lower_anchors)
            elif d.need == "digit":
                if digit is None:
                    digit = _DIGIT.search(text) is not None
                hit = digit
            elif d.need == "upper":
                if upper is None:
                    upper = _UPPER_PAIR.search(text) is not None
                hit = upper
            else:
                hit = True
            if hit:
                out.append(entry)
        return out

    def findings(self, text: str) -> list[tuple[int, int, int, Detector, str]]:
        """(start, end, order, detector, action) of every validated match, unsorted."""
        found: list[tuple[int, int, int, Detector, str]] = []
        for order, d, action in self.candidates(text):
            validate = d.validate
            for m in d.pattern.finditer(text):
                start, end = m.span(d.group)
                if validate is not None and not validate(text[start:end]):
                    continue
                found.append((start, end, order, d, action))
        return found

    def mask(self, text: str, *, blocking: bool = True) -> str:
        """`text` with every finding replaced; the same object when there is none.

        With `blocking`, a finding whose action is `block` raises `Blocked`; without (log lines,
        which cannot be refused), it is redacted.
        """
        if len(text) < _MIN_LENGTH or not self._active:
            return text
        found = self.findings(text)
        if not found:
            return text
        if blocking:
            for _, _, _, d, action in found:
                if action == "block":
                    raise Blocked(d.name)
        # Earliest first; at one start the longest, then the more specific detector (listed first).
        found.sort(key=lambda f: (f[0], -f[1], f[2]))
        parts: list[str] = []
        pos = 0
        i = 0
        while i < len(found):
            start, end, _, d, action = found[i]
            i += 1
            # Merge everything overlapping this span: no tail of a longer match may survive.
            while i < len(found) and found[i][0] < end:
                end = max(end, found[i][1])
                if _STRICTNESS[found[i][4]] > _STRICTNESS[action]:
                    action = found[i][4]
                i += 1
            parts.append(text[pos:start])
            parts.append(self.replacement(d.name, action, text[start:end]))
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def replacement(self, name: str, action: str, value: str) -> str:
        if action == "partial":
            # Keeping 4 characters of a short value would give most of it away.
            return f"****{value[-4:]}" if len(value) >= 8 else f"[REDACTED:{name}]"
        if action == "hash":
            digest = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:12]
            return f"[HASH:{name}:{digest}]"
        return f"[REDACTED:{name}]"  # redact, and block where blocking is not possible
