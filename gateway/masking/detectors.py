"""The detectors: compiled patterns, the validators a pattern alone cannot be (Luhn, mod 97, SSN
rules, `ipaddress`), and where each match really starts.

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

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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


# -- validators ---------------------------------------------------------------------------------


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def shannon_entropy(value: str) -> float:
    """Bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def credit_card_valid(value: str) -> bool:
    groups = re.split(r"[ -]", value)
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19:
        return False
    if len(groups) > 1:
        # Printed cards group 4-4-4-4(-3) or 4-6-5 / 4-6-4 (Amex, Diners), one separator kind.
        sizes = [len(g) for g in groups]
        if len({ch for ch in value if not ch.isdigit()}) != 1 or (
            sizes not in ([4, 6, 5], [4, 6, 4]) and not (all(s == 4 for s in sizes[:-1]) and sizes[-1] <= 4)
        ):
            return False
    # Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro): a
    # Luhn-valid run of digits in a log (a timestamp, an order id) rarely starts like a card.
    two = digits[:2]
    if not (
        digits[0] == "4"
        or two in {"30", "34", "35", "36", "37", "38", "39", "50", "56", "57", "58", "62", "63", "65", "67"}
        or "51" <= two <= "55"
        or "2221" <= digits[:4] <= "2720"
        or digits[:4] == "6011"
        or "644" <= digits[:3] <= "649"
    ):
        return False
    return luhn(digits)


# Lengths per country (ISO 13616 registry): a mod-97-valid string of the wrong length is no IBAN.
_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:])
    for entry in (  # noqa: SIM905 (a table is easier to check against the registry this way)
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 "
        "IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 "
        "MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 "
        "SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
    ).split()
}


def iban_valid(value: str) -> bool:
    compact = value.replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    return int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97 == 1


def ssn_valid(value: str) -> bool:
    area, group, serial = value.split("-")
    if area in {"000", "666"} or area[0] == "9" or group == "00" or serial == "0000":
        return False
    # Printed on sample cards and in advertising, never issued to anyone.
    return value not in {"078-05-1120", "219-09-9999", "123-45-6789"}


_NINO_FIRST = set("ABCEGHJKLMNOPRSTWXYZ")  # never D, F, I, Q, U, V
_NINO_SECOND = _NINO_FIRST - {"O"}
_NINO_BAD_PREFIXES = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def nino_valid(value: str) -> bool:
    return (
        value[0] in _NINO_FIRST
        and value[1] in _NINO_SECOND
        and value[:2] not in _NINO_BAD_PREFIXES
        and value[-1] in "ABCD"
    )


def phone_valid(value: str) -> bool:
    digits = [ch for ch in value if ch.isdigit()]
    if value[0] == "+":
        # E.164: a country code not starting with 0 and at most 15 digits; fewer than 8 is more
        # likely arithmetic than a number.
        return (
            digits[0] != "0"
            and 8 <= len(digits) <= 15
            and not any(s in value for s in ("--", "..", "  ", "((", "))"))
            and value.count("(") == value.count(")") <= 1
        )
    if len(digits) == 11 and digits[0] != "1":
        return False
    # North America: area code and exchange never start with 0 or 1; one kind of separator.
    area, exchange = digits[-10], digits[-7]
    return area not in "01" and exchange not in "01" and len({ch for ch in value if ch in ".-"}) <= 1


def ipv4_valid(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)  # rejects octets over 255 and leading zeros
    except ValueError:
        return False
    return True


def ipv6_valid(value: str) -> bool:
    address = value.split("%", 1)[0]
    groups = [g for g in address.split(":") if g]
    # Two groups, one of 3+ characters, a digit: "::1" (loopback) is nobody's, and Python slices
    # (`a[1::2]`) and C++/Rust paths (`dead::beef`) would parse as addresses too.
    if len(groups) < 2 or max(len(g) for g in groups) < 3 or not any(ch.isdigit() for ch in address):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


_PLACEHOLDERS = {"null", "none", "true", "false", "undefined", "changeme", "password", "redacted", "secret"}


def high_entropy(value: str) -> bool:
    """A value assigned to a password/secret/token/api_key keyword that looks like a real secret:
    long enough, random enough, not a placeholder, not a reference to one, not code."""
    if len(value) < 8 or value.lower() in _PLACEHOLDERS:
        return False
    if value[0] in "$<{%*[(#" or value.startswith(("os.", "self.", "env.", "process.")):
        return False  # ${VAR}, <secret>, {{ token }}, %(x)s, ***, getenv calls
    has_digit = any(ch.isdigit() for ch in value)
    has_alpha = any(ch.isalpha() for ch in value)
    if has_digit and has_alpha:
        # Random strings of n characters carry close to log2(n) bits per character.
        return shannon_entropy(value) >= min(3.0, 0.8 * math.log2(len(value)))
    # No digit: only long mixed-case strings (base64 without a digit); words and code paths
    # (`request.form`, `Content-Type`) stay. No letter: a number, an id, a date.
    return (
        has_alpha
        and len(value) >= 20
        and not value.islower()
        and not value.isupper()
        and "." not in value
        and shannon_entropy(value) >= 3.5
    )


def token_like(value: str) -> bool:
    """After `Bearer`: a token, not prose ("bearer authentication")."""
    if any(ch.isdigit() for ch in value):
        return True
    return len(value) >= 16 and not value.isalpha()


def aws_secret_valid(value: str) -> bool:
    return any(ch.isupper() for ch in value) and any(ch.islower() for ch in value)


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
        _c(r"secret[\w.-]{0,20}?" + _ASSIGN + r"([a-z0-9/+]{40})(?![a-z0-9/+=])"),
        view="lower",
        group=1,
        locate=_keyword_value,
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
        _c(r"::", r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"),
        locate=_ipv6,
        validate=ipv6_valid,
    ),
)

BY_NAME: dict[str, Detector] = {d.name: d for d in DETECTORS}
SECRETS = frozenset(d.name for d in DETECTORS if d.kind == "secret")
PII = frozenset(d.name for d in DETECTORS if d.kind == "pii")
