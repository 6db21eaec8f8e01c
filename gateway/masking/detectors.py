"""The detectors: one compiled pattern each, a validator for the ones a pattern alone cannot decide,
and the literal anchors the pre-filter looks for before the pattern is run at all.

Patterns are written for CPython's `re` engine, which skips ahead in C to the first position whose
character can start a match, but only when the pattern *starts* with a literal or a single
character class. So boundaries are checked just after the first character (`\\d(?<![\\w-]\\d)`)
rather than before it (`(?<![\\w-])\\d`), and `\\d\\d{2}` is written instead of `\\d{3}`: the same
language, several times faster on text with few candidates.
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


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    kind: Kind
    pattern: re.Pattern[str]
    group: int = 0  # the part of the match that is sensitive (the rest is context, kept)
    validate: Callable[[str], bool] | None = None
    # Pre-filter: the detector runs only if the text holds one of `anchors` (as written) or one of
    # `lower_anchors` (in the lower-cased text). Neither: `need` (a char test) or always.
    anchors: tuple[str, ...] = ()
    lower_anchors: tuple[str, ...] = ()
    need: str = ""  # "digit": the text must contain a digit; "upper": an A-Z run


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


# -- validators ---------------------------------------------------------------------------------


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def shannon_entropy(value: str) -> float:
    """Bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def _credit_card(value: str) -> bool:
    groups = re.split(r"[ -]", value)
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 3:
        return False
    if len(groups) > 1:
        # Printed cards group 4-4-4-4(-3) or 4-6-5 / 4-6-4 (Amex, Diners), with one separator kind.
        if len({s for s in value if not s.isdigit()}) != 1:
            return False
        sizes = [len(g) for g in groups]
        if sizes not in ([4, 6, 5], [4, 6, 4]) and not (
            all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
        ):
            return False
    # Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro): a
    # Luhn-valid run of digits from a log (timestamps, order ids) rarely starts like a card.
    if not (
        digits[0] == "4"
        or digits[:2] in {"34", "37", "30", "36", "38", "39", "35", "62", "65", "50", "56", "57", "58"}
        or "51" <= digits[:2] <= "55"
        or "2221" <= digits[:4] <= "2720"
        or digits[:4] == "6011"
        or "644" <= digits[:3] <= "649"
        or digits[:2] in {"67", "63"}
    ):
        return False
    return luhn(digits)


# Lengths per country (ISO 13616 registry): a mod-97-valid string of the wrong length is not an IBAN.
_IBAN_LENGTHS = dict(
    (entry[:2], int(entry[2:]))
    for entry in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 "
        "IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 "
        "MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 "
        "SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
    ).split()
)


def iban_valid(value: str) -> bool:
    compact = value.replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_valid(value: str) -> bool:
    area, group, serial = value.split("-")
    if area in {"000", "666"} or area[0] == "9" or group == "00" or serial == "0000":
        return False
    # Numbers printed on sample cards and in advertising, never issued to anyone.
    return value not in {"078-05-1120", "219-09-9999", "123-45-6789"}


_NINO_BAD_PREFIXES = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def nino_valid(value: str) -> bool:
    compact = value.replace(" ", "")
    if compact[:2] in _NINO_BAD_PREFIXES:
        return False
    return value.count(" ") in (0, 4)  # "AB123456C" or "AB 12 34 56 C", not a mix


def ca_sin_valid(value: str) -> bool:
    digits = value[0:3] + value[4:7] + value[8:11]
    return digits[0] not in "08" and luhn(digits)


def phone_valid(value: str) -> bool:
    digits = "".join(ch for ch in value if ch.isdigit())
    if value.startswith("+"):
        # E.164: at most 15 digits; with fewer than 8 it is more likely arithmetic than a number.
        if not 8 <= len(digits) <= 15 or "--" in value or ".." in value or "  " in value:
            return False
        return value.count("(") == value.count(")") <= 1
    if len(digits) == 11 and digits[0] != "1":
        return False
    core = digits[-10:]
    if len(core) != 10 or core[0] in "01" or core[3] in "01":
        return False  # NANP: area code and exchange never start with 0 or 1
    separators = {ch for ch in value if ch in ".-"}
    return len(separators) <= 1  # "555.123-4567" is not how anyone writes a number


def ipv4_valid(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def ipv6_valid(value: str) -> bool:
    address = value.split("%", 1)[0]
    groups = [g for g in address.split(":") if g]
    # At least two groups, one of 3+ characters, and a digit: "::1" (loopback) is nobody's, and
    # Python slices (`a[1::2]`) and C++/Rust paths (`dead::beef`) parse as addresses too.
    if len(groups) < 2 or max(len(g) for g in groups) < 3 or not any(ch.isdigit() for ch in address):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


_PLACEHOLDERS = {"null", "none", "true", "false", "undefined", "changeme", "password", "redacted", "secret"}


def assigned_secret(value: str) -> bool:
    """A value assigned to a password/secret/token/api_key keyword that looks like a real secret:
    long enough, high enough entropy, not a placeholder, not a reference to one."""
    stripped = value.strip("\"'`")
    if len(stripped) < 8 or stripped.lower() in _PLACEHOLDERS:
        return False
    if stripped[0] in "$<{%*[(" or stripped.startswith(("os.", "self.", "env.", "process.")):
        return False  # ${VAR}, <secret>, {{ token }}, %(x)s, ***, getenv calls
    has_digit = any(ch.isdigit() for ch in stripped)
    has_alpha = any(ch.isalpha() for ch in stripped)
    if has_digit and has_alpha:
        # Random strings of n characters have close to log2(n) bits per character.
        return shannon_entropy(stripped) >= min(3.0, 0.8 * math.log2(len(stripped)))
    # No digit: only long mixed-case strings (base64 without digits); words and code paths
    # (`request.form`, `Content-Type`) stay.  No letter: a number, an id, a date.
    return (
        has_alpha
        and len(stripped) >= 20
        and not stripped.islower()
        and not stripped.isupper()
        and shannon_entropy(stripped) >= 3.5
        and "." not in stripped
    )


# -- the detectors ------------------------------------------------------------------------------

DETECTORS: tuple[Detector, ...] = (
    # ---- secrets (the more specific first: on an overlap, the first listed names the span)
    Detector(
        "private_key",
        "secret",
        _c(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
            r"[\s\S]*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        anchors=("PRIVATE KEY",),
    ),
    Detector(
        "aws_access_key",
        "secret",
        _c(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        anchors=("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    Detector(
        "aws_secret_key",
        "secret",
        _c(r"[Ss](?i:ecret)[\w.-]{0,20}?[\"']?\s*[:=]>?\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        group=1,
        lower_anchors=("aws", "akia", "asia"),
    ),
    Detector(
        "github_token",
        "secret",
        _c(r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})(?!\w)"),
        anchors=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Detector(
        "gitlab_token",
        "secret",
        _c(r"g(?<![A-Za-z0-9_]g)lpat-[A-Za-z0-9_-]{20,}"),
        anchors=("glpat-",),
    ),
    Detector(
        "slack_webhook",
        "secret",
        _c(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{8,}"),
        anchors=("hooks.slack.com",),
    ),
    Detector(
        "slack_token",
        "secret",
        _c(r"x(?<![A-Za-z0-9]x)ox[abprse]-[A-Za-z0-9-]{10,}"),
        anchors=("xox",),
    ),
    Detector(
        "stripe_key",
        "secret",
        _c(r"[sr](?<![A-Za-z0-9][sr])k_live_[A-Za-z0-9]{16,}"),
        anchors=("k_live_",),
    ),
    Detector(
        "google_api_key",
        "secret",
        _c(r"A(?<![A-Za-z0-9]A)Iza[0-9A-Za-z_-]{35}(?![\w-])"),
        anchors=("AIza",),
    ),
    Detector(
        "jwt",
        "secret",
        _c(r"e(?<![\w-]e)yJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}(?![\w-])"),
        anchors=("eyJ",),
    ),
    Detector(
        "bearer_token",
        "secret",
        # `Authorization: Bearer x`, `Basic x`, `token x`, and a bare `bearer x` anywhere.
        _c(
            r"[AaBb](?:(?i:uthorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)|(?i:earer))"
            r"\s+([A-Za-z0-9._~+/=-]{8,})"
        ),
        group=1,
        lower_anchors=("bearer", "authorization"),
    ),
    Detector(
        "secret_assignment",
        "secret",
        # A keyword ending a name (DB_PASSWORD, client_secret, apiKey, GITHUB_TOKEN) followed by `=`,
        # `:`, `=>` and a value; the validator keeps the high-entropy ones.
        _c(
            r"[PpSsTtAaCc](?<![a-z][psta]|[A-Z][PSTAC])"
            r"(?i:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|auth[_-]?key|private[_-]?key"
            r"|credentials?)(?i:[_.-]?(?:key|value|string))?(?![A-Za-z0-9])"
            r"[\"']?\s*(?:[:=]|=>|:=)\s*[\"'`]?([^\s\"'`,;)}\]]{8,200})"
        ),
        group=1,
        validate=assigned_secret,
        lower_anchors=("pass", "pwd", "secret", "token", "key", "credential"),
    ),
    # ---- PII
    Detector(
        "email",
        "pii",
        # Local parts start at a word boundary, checked after their first character.
        _c(
            r"[A-Za-z0-9](?<![A-Za-z0-9._%+-][A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}"
            r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
        ),
        anchors=("@",),
    ),
    Detector(
        "credit_card",
        "pii",
        _c(r"\d(?<![\w.-]\d)(?:[ -]?\d){12,18}(?![\w-]|\.\d)"),
        validate=_credit_card,
        need="digit",
    ),
    Detector(
        "iban",
        "pii",
        _c(
            r"[A-Z](?<![\w][A-Z])[A-Z]\d\d"
            r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?!\w)"
        ),
        validate=iban_valid,
        need="upper",
    ),
    Detector(
        "ssn",
        "pii",
        _c(r"\d(?<![\w.-]\d)\d\d-\d\d-\d{4}(?![\w-])"),
        validate=ssn_valid,
        need="digit",
    ),
    Detector(
        "uk_nino",
        "pii",
        _c(r"[A-CEGHJ-PR-TW-Z](?<![\w][A-Z])[A-CEGHJ-NPR-TW-Z] ?\d\d ?\d\d ?\d\d ?[A-D](?!\w)"),
        validate=nino_valid,
        need="upper",
    ),
    Detector(
        "ca_sin",
        "pii",
        _c(r"\d(?<![\w.-]\d)\d\d([- ])\d{3}\1\d{3}(?![\w-])"),
        validate=ca_sin_valid,
        need="digit",
    ),
    Detector(
        "phone",
        "pii",
        # `+` and 8-15 digits (E.164, grouped any common way), or a North American 3-3-4 number.
        _c(
            r"(?:\+(?<![\w+]\+)[1-9][\d ().-]{6,20}\d"
            r"|\((?<![\w(]\()\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
            r"|\d(?<![\w.+-]\d)(?:[ .-]\d{3}[ .-]|\d\d[ .-])\d{3}[ .-]\d{4})"
            r"(?![\w-]|\.\d)"
        ),
        validate=phone_valid,
        need="digit",
    ),
    Detector(
        "ipv4",
        "pii",
        _c(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)"),
        validate=ipv4_valid,
        need="digit",
    ),
    Detector(
        "ipv6",
        "pii",
        # Candidates only: a `::` or eight groups (which `12:00:01` never has); `ipaddress` decides.
        _c(
            r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])"
            r"(?=[0-9A-Fa-f:]*:(?<=::)|[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{1,4}){7})"
            r"[0-9A-Fa-f:]{2,38}(?:\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9]+)?(?![\w:.])"
        ),
        validate=ipv6_valid,
        anchors=(":",),
    ),
)

BY_NAME: dict[str, Detector] = {d.name: d for d in DETECTORS}
SECRETS = frozenset(d.name for d in DETECTORS if d.kind == "secret")
PII = frozenset(d.name for d in DETECTORS if d.kind == "pii")
