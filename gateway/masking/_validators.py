"""What a pattern alone cannot decide: checksums (Luhn, mod 97), issuing rules (SSN, NINO, North
American numbers), address syntax (`ipaddress`), and whether a value next to a keyword is random
enough to be a secret. Each takes the original characters of a match and says yes or no.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter


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
