"""A `Masker`: the detectors one configuration turns on, each with its action, applied to strings.

Almost every string the gateway relays holds nothing sensitive, so the fast path is what counts.
One pre-filter pass per text computes what the detectors share and decides which can match at
all: the digit-free text skips every number detector and the shape view; a text without `@`,
`:` or `.` skips e-mail and IP detectors; the lower-case and shape views are built once, only if a
detector that needs them is still in play. The remaining detectors' patterns all start with a
literal (see `detectors`), so each is a C-speed substring scan. A string with no finding comes
back as the same object: callers tell "unchanged" by identity and copy nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Literal

from gateway.masking.detectors import DETECTORS, Detector

Action = Literal["redact", "partial", "hash", "block", "allow"]
_STRICTNESS = {"partial": 0, "hash": 1, "redact": 2, "block": 3}  # on an overlap the strictest wins

_DIGIT = re.compile(r"\d")
_MIN_LENGTH = 7  # the shortest thing any detector matches ("1.2.3.4")
_SHAPE = str.maketrans(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "0" * 10 + "A" * 26 + "a" * 26
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# What a detector needs in the text to possibly match, beyond its own literal: skipped otherwise.
_NEEDS: dict[str, str] = {
    "email": "@",
    "ipv4": ".",
    "ipv6": ":",
    "private_key": "-----",
}
_NEEDS_DIGIT = frozenset({"credit_card", "iban", "ssn", "uk_nino", "phone", "ipv4"})

Finding = tuple[int, int, int, Detector, str]  # start, end, detector order, detector, action


class Blocked(Exception):
    """A detector whose action is `block` matched. Carries the detector's name, never the value."""

    def __init__(self, detector: str) -> None:
        super().__init__(detector)
        self.detector = detector


class Masker:
    def __init__(self, actions: Mapping[str, Action], *, salt: str = "") -> None:
        self.actions: dict[str, Action] = {d.name: actions.get(d.name, "allow") for d in DETECTORS}
        self._active: list[tuple[int, Detector, str]] = [
            (order, d, self.actions[d.name])
            for order, d in enumerate(DETECTORS)
            if self.actions[d.name] != "allow"
        ]
        self._salt = salt.encode()
        self.enabled = bool(self._active)
        # Told the detector name of every value masked (the masking middleware counts them).
        self.on_masked: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return "Masker(" + ", ".join(f"{d.name}={a}" for _, d, a in self._active) + ")"

    def candidates(self, text: str) -> list[tuple[int, Detector, str]]:
        """The pre-filter: the active detectors that can possibly match `text`."""
        digit = _DIGIT.search(text) is not None
        present: dict[str, bool] = {}
        out = []
        for entry in self._active:
            name = entry[1].name
            if name in _NEEDS_DIGIT and not digit:
                continue
            need = _NEEDS.get(name)
            if need is not None:
                if need not in present:
                    present[need] = need in text
                if not present[need]:
                    continue
            out.append(entry)
        return out

    def findings(self, text: str) -> list[Finding]:
        """Every validated match, unsorted."""
        found: list[Finding] = []
        views: dict[str, str] = {"text": text}
        for order, d, action in self.candidates(text):
            view = views.get(d.view)
            if view is None:
                view = views[d.view] = _view(text, d.view)
            locate, validate = d.locate, d.validate
            for pattern in d.patterns:
                for m in pattern.finditer(view):
                    span = locate(text, m) if locate is not None else m.span(d.group)
                    if span is None or (validate is not None and not validate(text[span[0] : span[1]])):
                        continue
                    found.append((span[0], span[1], order, d, action))
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
            for finding in found:
                if finding[4] == "block":
                    raise Blocked(finding[3].name)
        # Earliest first; at one start the longest, then the more specific detector (listed first).
        found.sort(key=lambda f: (f[0], -f[1], f[2]))
        parts: list[str] = []
        pos = i = 0
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
            if self.on_masked is not None:
                self.on_masked(d.name)
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


def _view(text: str, kind: str) -> str:
    if kind == "shape":
        return text.translate(_SHAPE)
    lower = text.lower()
    # A few characters change length when lower-cased ("İ"); positions must carry over.
    return lower if len(lower) == len(text) else text.translate(_ASCII_LOWER)
