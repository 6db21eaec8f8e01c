"""The detectors: compiled patterns, where each match really starts, and the validator (in
`_validators`: Luhn, mod 97, SSN rules, `ipaddress`, entropy) for what a pattern cannot decide.

Speed comes from one property of CPython's `re`: a search skips ahead in C to the occurrences of a
pattern's *literal prefix* and tries a match only there. A pattern that starts with a character
class (`\\d`, `[A-Z]`) is tried at every such character instead: ten times slower on log text,
where a quarter of the characters are digits. So every pattern here starts with a literal, found
in one of three views of the text, all of the same length (positions carry over unchanged):

- ``text``:  the text itself (`AKIA`, `ghp_`, `eyJ`, `@`, `::`);
- ``lower``: lower-cased, for keywords in any case (`secret`, `password`, `bearer`);
- ``shape``: every digit mapped to ``0``, A-Z to ``A``, a-z to ``a``, so that "a digit" and "two
  capitals" become literals (`000-00-0000` for an SSN, `AA00` for an IBAN).

Where the interesting part starts before the literal (a phone number's area code, an e-mail's local
part), `locate` finds the real start from the match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.masking._validators import (
    aws_secret_valid,
    credit_card_valid,
    high_entropy,
    iban_valid,
    ipv4_valid,
    ipv6_valid,
    nino_valid,
    phone_valid,
    ssn_valid,
    token_like,
)

Kind = Literal["secret", "pii"]
View = Literal["text", "lower", "shape"]
Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    kind: Kind
    patterns: tuple[re.Pattern[str], ...]
    view: View = "text"
    group: int = 0  # the sensitive part of a match (the rest, e.g. a keyword, is context and stays)
    # The span to mask, from the original text and a match in the view; None rejects the match.
    locate: Callable[[str, re.Match[str]], Span | None] | None = None
    validate: Callable[[str], bool] | None = None  # on the original characters of the span


def _c(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.ASCII) for p in patterns)


# -- where a match starts -----------------------------------------------------------------------


def _keyword_value(text: str, m: re.Match[str]) -> Span | None:
    """A keyword must start a word, or a camelCase part of one (`clientSecret`, `DB_PASSWORD`);
    the value (group 1) is what is masked."""
    start = m.start()
    if start and text[start - 1].isalpha() and not (text[start - 1].islower() and text[start].isupper()):
        return None
    return m.span(1)


def _one_before(text: str, m: re.Match[str]) -> Span:
    return m.start() - 1, m.end()


_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _email(text: str, m: re.Match[str]) -> Span | None:
    at = m.start()
    start = at
    while start > at - 64 and start > 0 and text[start - 1] in _EMAIL_LOCAL:
        start -= 1
    while start < at and not text[start].isalnum():
        start += 1  # a local part starts with a letter or digit ("--bob@x.org" is "bob@x.org")
    return (start, m.end()) if start < at else None


_DIGITS = frozenset("0123456789")


def _ipv4(text: str, m: re.Match[str]) -> Span:
    start = m.start()
    while start and text[start - 1] in _DIGITS:  # 1-3 of them, the lookbehind made sure
        start -= 1
    return start, m.end()


def _phone(text: str, m: re.Match[str]) -> Span | None:
    """A `+...` or `(...` match is the number; otherwise the match is a North American number's
    last four digits, which starts 8 characters before (10 with a leading `1-`)."""
    if m.group()[0] in "+(":
        return m.span()
    start = m.end() - 12
    before = text[start - 1] if start else " "
    if (
        before in " .-"
        and start >= 2
        and text[start - 2] == "1"
        and (start == 2 or not (text[start - 3].isalnum() or text[start - 3] in "_.+-"))
    ):
        return start - 2, m.end()
    if before.isalnum() or before in "_.+-":
        return None
    return start, m.end()


# An AWS secret access key: 40 characters of base64's alphabet (30 random bytes, no padding).
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=_.-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-]|\.\w)", re.ASCII)


def _aws_secret(text: str, m: re.Match[str]) -> Span | None:
    """Three kinds of match: after a keyword (`secret`, `aws`: the keyword rules apply), after an
    access key id (`AKIA...`, then the value), or a `/` or `+` inside a run that may be a key on
    its own: the run must be exactly 40 characters and look random (see below)."""
    first = m.group()[0]
    if first in "/+":
        start = m.start()
        found = _AWS_SECRET.search(text, max(0, start - 39), start + 41)
        if found is None or not found.start() <= start < found.end():
            return None
        run = found.group()
        # A random key has about six digits and one `/` or `+`; a path has more separators, or
        # starts or ends with one, and often no digit. (About one key in a hundred fails this.)
        digit = any(ch.isdigit() for ch in run)
        if not digit or run.count("/") + run.count("+") > 5 or run[0] == "/" or run[-1] == "/":
            return None
        return found.span()
    if m.re.pattern.startswith(("kia", "sia")):  # an access key id: the value follows it
        return m.span(1)
    return _keyword_value(text, m)


_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_IPV6 = re.compile(r"[0-9A-Fa-f:]{2,39}(?:\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9]+)?(?![\w:.])", re.ASCII)


def _ipv6(text: str, m: re.Match[str]) -> Span | None:
    """The match is a `::` or four colon-separated groups inside a candidate: widen it."""
    start = m.start()
    while start > 0 and text[start - 1] in _HEX_COLON and m.start() - start < 39:
        start -= 1
    if start and (text[start - 1].isalnum() or text[start - 1] in "_."):
        return None
    found = _IPV6.match(text, start)
    return found.span() if found is not None and found.end() >= m.end() else None


# -- the detectors ------------------------------------------------------------------------------

_ASSIGN = r"[\"']?\s*(?::=|=>|[:=])\s*[\"'`]?"  # `key = "v"`, `"key": "v"`, `key: v`, `:key => v`
_KEYWORD_VALUE = r"(?:[_.-]?(?:key|value|string))?(?![a-z0-9])" + _ASSIGN + r"([^\s\"'`,;)}\]]{8,})"

_RUN_END = r"(?![a-z0-9/+=_-]|\.\w)"  # not inside a longer token (a sentence's full stop may follow)

DETECTORS: tuple[Detector, ...] = (
    # ---- secrets (the more specific first: on an overlap the first listed names the span)
    Detector(
        "private_key",
        "secret",
        # A key cut off by truncation is masked to the end of the text.
        _c(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[ A-Z0-9]*PRIVATE KEY"
            r"(?: BLOCK)?-----|\Z)"
        ),
    ),
    Detector(
        "aws_access_key",
        "secret",
        _c(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ),
    Detector(
        "aws_secret_key",
        "secret",
        # Mixed case is required of every kind (`aws_secret_valid`), so a git SHA (40 hex digits,
        # one case, no `/` or `+`) is never one.
        _c(
            r"secret[\w.-]{0,20}?" + _ASSIGN + r"([a-z0-9/+]{40})(?![a-z0-9/+=])",
            r"aws[\w.-]{0,30}?" + _ASSIGN + r"([a-z0-9/+]{40})(?![a-z0-9/+=])",
            # An access key id then its secret, as in a credentials CSV or `aws configure` output.
            *(
                rf"{s}ia(?<![a-z0-9]a{s}ia)[a-z0-9]{{16}}[\s,;:|\"'=]{{1,5}}([a-z0-9/+]{{40}})(?![a-z0-9/+=])"
                for s in "ks"
            ),
            # On its own: a `/` or `+` in a run that may be 40 long, `_aws_secret` measures the run.
            # Either 20 run characters precede it and the run ends within 19 after, or the run
            # ends 20 to 39 after: every 40-run with a `/` meets one, while paths (`/api/v1/x`)
            # and long base64 blobs are turned down here, in C, without a Python call per `/`.
            # (One pattern per character: a literal first is a fast scan, a class is not.)
            *(
                rf"\{c}(?:(?<=[a-z0-9/+]{{20}}\{c})(?=[a-z0-9/+]{{0,19}}{_RUN_END})"
                rf"|(?=[a-z0-9/+]{{20,39}}{_RUN_END}))"
                for c in "/+"
            ),
        ),
        view="lower",
        group=1,
        locate=_aws_secret,
        validate=aws_secret_valid,
    ),
    Detector(
        "github_token",
        "secret",
        _c(
            r"gh(?<![A-Za-z0-9_]gh)[pousr]_[A-Za-z0-9]{36,255}(?!\w)",
            r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255}",
        ),
    ),
    Detector("gitlab_token", "secret", _c(r"glpat-(?<![A-Za-z0-9_]glpat-)[A-Za-z0-9_-]{20,}")),
    Detector(
        "slack_webhook",
        "secret",
        _c(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{8,}"),
    ),
    Detector("slack_token", "secret", _c(r"xox(?<![A-Za-z0-9]xox)[abprse]-[A-Za-z0-9-]{10,}")),
    Detector(
        "stripe_key",
        "secret",
        _c(r"k_live_(?<=(?<![A-Za-z0-9])[sr]k_live_)[A-Za-z0-9]{16,}"),
        locate=_one_before,
    ),
    Detector("google_api_key", "secret", _c(r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}(?![\w-])")),
    Detector(
        "jwt",
        "secret",
        _c(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}(?![\w-])"),
    ),
    Detector(
        "bearer_token",
        "secret",
        _c(
            r"bearer(?:\s+|%20)([a-z0-9._~+/=-]{8,})",
            r"authorization" + _ASSIGN + r"(?:basic|token|digest)\s+([a-z0-9._~+/=-]{8,})",
        ),
        view="lower",
        group=1,
        locate=_keyword_value,
        validate=token_like,
    ),
    Detector(
        "secret_assignment",
        "secret",
        _c(
            *(
                keyword + _KEYWORD_VALUE
                for keyword in (
                    r"passw(?:or)?d",
                    r"pwd",
                    r"secret",
                    r"token",
                    r"api[_-]?key",
                    r"access[_-]?key",
                    r"auth[_-]?key",
                    r"private[_-]?key",
                    r"credentials?",
                )
            )
        ),
        view="lower",
        group=1,
        locate=_keyword_value,
        validate=high_entropy,
    ),
    # ---- PII
    Detector(
        "email",
        "pii",
        _c(r"@(?<=[A-Za-z0-9._%+-]@)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"),
        locate=_email,
    ),
    Detector(
        "credit_card",
        "pii",
        # 13-19 digits, or grouped 4-4-4-4(-3) / 4-6-5 (Amex) / 4-6-4 (Diners).
        _c(
            r"0000(?<![\w.-]0000)(?:0{9,15}|(?:[ -]0000){2}[ -]0{1,4}(?:[ -]000)?|[ -]000000[ -]0000(?:0)?)"
            r"(?![\w-]|\.0)"
        ),
        view="shape",
        validate=credit_card_valid,
    ),
    Detector(
        "iban",
        "pii",
        _c(r"AA00(?<![\w]AA00)(?:[A0]{11,30}|(?: [A0]{4}){2,7}(?: [A0]{1,3})?)(?!\w)"),
        view="shape",
        validate=iban_valid,
    ),
    Detector(
        "ssn", "pii", _c(r"000-00-0000(?<![\w.-]000-00-0000)(?![\w-])"), view="shape", validate=ssn_valid
    ),
    Detector(
        "uk_nino",
        "pii",
        _c(r"AA000000A(?<![\w]AA000000A)(?!\w)", r"AA 00 00 00 A(?<![\w]AA 00 00 00 A)(?!\w)"),
        view="shape",
        validate=nino_valid,
    ),
    Detector(
        "phone",
        "pii",
        _c(
            # E.164: `+` and 8-15 digits, grouped any common way.
            r"\+(?<![\w+]\+)0[0 ().-]{6,20}0(?![\w-]|\.0)",
            # North America: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567.
            r"\(000\)(?<![\w(]\(000\))[ .-]?000[ .-]0000(?![\w-]|\.0)",
            r"0000(?<=0[ .-]0000)(?<=000[ .-]000[ .-]0000)(?![\w-]|\.0)",
        ),
        view="shape",
        locate=_phone,
        validate=phone_valid,
    ),
    Detector(
        "ipv4",
        "pii",
        _c(
            r"\.(?:(?<=(?<![\w.])\d\.)|(?<=(?<![\w.])\d\d\.)|(?<=(?<![\w.])\d\d\d\.))"
            r"\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)"
        ),
        locate=_ipv4,
        validate=ipv4_valid,
    ),
    Detector(
        "ipv6",
        "pii",
        # Every address has a `::` or eight groups (four colon-separated ones, which `12:00:01`
        # has not); `_ipv6` widens the hit to the candidate and `ipaddress` decides.
        _c(
            # Before `::`, nothing word-like, or one hex group that follows nothing word-like: so
            # the thousands of `std::` and `Vec::` in C++ or Rust source never reach Python.
            r"::(?![G-Zg-z_])(?<![G-Zg-z_]::)(?:(?<![\w.]::)"
            + "".join(rf"|(?<=[0-9A-Fa-f]{{{n}}}::)(?<![\w.][0-9A-Fa-f]{{{n}}}::)" for n in range(1, 5))
            + ")",
            r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:",
        ),
        locate=_ipv6,
        validate=ipv6_valid,
    ),
)

BY_NAME: dict[str, Detector] = {d.name: d for d in DETECTORS}
SECRETS = frozenset(d.name for d in DETECTORS if d.kind == "secret")
PII = frozenset(d.name for d in DETECTORS if d.kind == "pii")
