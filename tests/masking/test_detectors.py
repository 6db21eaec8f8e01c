"""The detectors one by one: what each must find, and what it must leave alone."""

from __future__ import annotations

import base64
import random

import pytest

from gateway.masking import BY_NAME, Blocked, Masker, default_masker
from gateway.masking._validators import credit_card_valid, iban_valid, luhn, ssn_valid
from tests.bench.masking import benchmark_masking, realistic_text

MASKER = default_masker()
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def found(text: str) -> list[tuple[str, str]]:
    """(detector, matched text) of every finding, in order."""
    return sorted(
        ((d.name, text[s:e]) for s, e, _, d, _ in MASKER.findings(text)), key=lambda f: text.index(f[1])
    )


def names(text: str) -> set[str]:
    return {name for name, _ in found(text)}


# (detector, text, the part that must be found)
POSITIVES = [
    ("aws_access_key", "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key", '"AccessKeyId": "ASIAY34FZKBOKMUTVV7A",', "ASIAY34FZKBOKMUTVV7A"),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "aws_secret_key",
        '{"SecretAccessKey": "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"}',
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    ),
    # A plain AWS secret access key, with no keyword: on its own, after "aws", after its key id.
    ("aws_secret_key", AWS_SECRET, AWS_SECRET),
    (
        "aws_secret_key",
        'the key is "je7MtGbClwBF+2Zp9Utk/h3yCo8nvbEXAMPLEKEY".',
        "je7MtGbClwBF+2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    ),
    (
        "aws_secret_key",
        "AWS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01",
    ),
    (
        "aws_secret_key",
        "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY01",
    ),
    (
        "github_token",
        "token ghp_0123456789abcdefghijABCDEFGHIJ012345 ok",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    ),
    ("github_token", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
    (
        "github_token",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    ("gitlab_token", "CI_TOKEN: glpat-xYz0123456789abcdEFGH", "glpat-xYz0123456789abcdEFGH"),
    ("slack_token", "xoxb-1234567890-0987654321-AbCdEfGhIjKl", "xoxb-1234567890-0987654321-AbCdEfGhIjKl"),
    (
        "slack_webhook",
        "post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX now",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("stripe_key", "stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "rk_live_51HxyzABCDEFGHIJ0123", "rk_live_51HxyzABCDEFGHIJ0123"),
    (
        "google_api_key",
        "key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI&x",
        "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
    ),
    (
        "jwt",
        f"id_token {JWT}.",
        JWT,
    ),
    ("bearer_token", "Authorization: Bearer abc123def456ghi789", "abc123def456ghi789"),
    ("bearer_token", 'headers = {"authorization": "Basic dXNlcjpwYXNzd29yZA=="}', "dXNlcjpwYXNzd29yZA=="),
    ("bearer_token", "curl -H 'bearer 9f8e7d6c5b4a3210'", "9f8e7d6c5b4a3210"),
    ("secret_assignment", "DB_PASSWORD=S3cr3t-Pa55w0rd-2026!", "S3cr3t-Pa55w0rd-2026!"),
    ("secret_assignment", '{"client_secret": "q8Zt1vR0pL9xK2mN4bC7"}', "q8Zt1vR0pL9xK2mN4bC7"),
    ("secret_assignment", "apiKey: 'a1b2c3d4e5f6g7h8'", "a1b2c3d4e5f6g7h8"),
    ("secret_assignment", "clientSecret => 'Zx9Qw8Er7Ty6Ui5O'", "Zx9Qw8Er7Ty6Ui5O"),
    ("secret_assignment", "token=4f9a0c1e77b2d3c8a9e0", "4f9a0c1e77b2d3c8a9e0"),
    ("email", "mail jane.doe+tag@example.co.uk, thanks", "jane.doe+tag@example.co.uk"),
    ("email", "<ops-team@corp.example.org>", "ops-team@corp.example.org"),
    ("credit_card", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("credit_card", "pan=5555555555554444;", "5555555555554444"),
    ("credit_card", "amex 3782-822463-10005", "3782-822463-10005"),
    ("iban", "IBAN: GB82 WEST 1234 5698 7654 32.", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "to DE89370400440532013000 today", "DE89370400440532013000"),
    ("ssn", "SSN 536-90-4399 on file", "536-90-4399"),
    ("uk_nino", "NI number: AB123456C", "AB123456C"),
    ("uk_nino", "NINO JG 12 34 56 A", "JG 12 34 56 A"),
    ("phone", "call +44 20 7946 0958 today", "+44 20 7946 0958"),
    ("phone", "tel: +14155552671", "+14155552671"),
    ("phone", "office (415) 555-2671.", "(415) 555-2671"),
    ("phone", "cell 415-555-2671", "415-555-2671"),
    ("phone", "toll-free 1-800-555-0199", "1-800-555-0199"),
    ("phone", "+1 (415) 555-2671", "+1 (415) 555-2671"),
    ("ipv4", "client 203.0.113.42:8443 connected", "203.0.113.42"),
    ("ipv6", "from 2001:db8::8a2e:370:7334 port", "2001:db8::8a2e:370:7334"),
    ("ipv6", "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ipv6", "mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
]


@pytest.mark.parametrize(("detector", "text", "secret"), POSITIVES)
def test_finds(detector: str, text: str, secret: str) -> None:
    assert (detector, secret) in found(text)
    masked = MASKER.mask(text)
    assert secret not in masked and "[REDACTED:" in masked


def test_private_key_block_and_truncated_key() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7Oejecs\n-----END RSA PRIVATE KEY-----"
    masked = MASKER.mask(f"key:\n{pem}\ndone")
    assert masked == "key:\n[REDACTED:private_key]\ndone"
    cut = MASKER.mask("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ")
    assert cut == "[REDACTED:private_key]"


# Text that looks a bit like something sensitive and is not.
NEGATIVES = [
    "released on 2026-03-14 at 12:00:01.123Z",  # dates and times
    "version 1.2.3 and v10.20.30.40 and 3.11.7",  # versions (a 4-part one after "v")
    "request 550e8400-e29b-41d4-a716-446655440000 done",  # UUID
    "order 4111 1111 1111 1112 declined",  # Luhn-invalid card
    "id=12345678901234 count=1234567890123",  # long ids that are not cards
    "epoch 1710417600123 ms",  # 13 digits, Luhn aside: no issuer starts with 1
    "000-00-0000 and 666-12-3456 and 912-34-5678",  # invalid SSNs
    "ticket 123-456-7890",  # area code 123: not a North American number
    "x = a[1::2] + b[::2]; std::vector<int> v; Foo::Bar",  # slices and paths, not IPv6
    "at 12:30:45 and mac 00:1a:2b:3c:4d:5e",  # times and MAC addresses
    "999.1.1.1 and 1.2.3.4.5",  # not IPv4
    "GB82 WEST 1234 5698 7654 33",  # IBAN with a wrong check digit
    "token = request.headers.get('X-Request-Token')",  # code, not a token
    "password: ${DB_PASSWORD}",  # a reference, not a value
    "password = 'changeme'",  # a placeholder
    "token_count = 12345678",  # a number
    "tokenizer = AutoTokenizer.from_pretrained(name)",
    "the bearer authentication scheme",
    "@dataclass(frozen=True)",
    "user@localhost",
    "AKIAIOSFODNN7EXAMPL",  # 19 characters: too short for an access key id
    "3.14159265358979",  # pi
    "+1",
    "price 12.50 total 1,234.56",
    # 40 hex digits: git SHAs, however introduced, are not AWS secret keys.
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "aws_sha: 3f786850e387550fdab836ed7e6dc881de23001b",
    "3F786850E387550FDAB836ED7E6DC881DE23001B",
    # 40-character runs with a `/` that are paths, or part of a longer token.
    "see src/Gateway/Admin/Api/Handlers/Main1/Xyz for it",
    "/JalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "xwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY_x",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_alone(text: str) -> None:
    assert found(text) == []
    assert MASKER.mask(text) is text  # nothing found: the very same object


def test_a_git_sha_after_an_access_key_id_is_no_aws_secret_key() -> None:
    sha = "3f786850e387550fdab836ed7e6dc881de23001b"
    assert found(f"AKIAIOSFODNN7EXAMPLE {sha}") == [("aws_access_key", "AKIAIOSFODNN7EXAMPLE")]
    # (A hex value assigned to a secret is still a `secret_assignment`, but not an AWS key.)
    assert "aws_secret_key" not in names(f"aws_secret_access_key={sha}")


def test_a_long_base64_blob_is_no_aws_secret_key() -> None:
    # A `/` deep inside base64 data (an image) is refused before any Python runs for it.
    blob = base64.b64encode(random.Random(1).randbytes(30_000)).decode()
    assert blob.count("/") > 100
    assert "aws_secret_key" not in names(blob)


def test_validators() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert credit_card_valid("4111 1111 1111 1111")
    assert not credit_card_valid("4111 1111-1111 1111")  # mixed separators
    assert not credit_card_valid("41 1111 1111 1111 11")  # not a card's grouping
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("XX82WEST12345698765432")  # no such country
    assert ssn_valid("536-90-4399") and not ssn_valid("536-00-4399") and not ssn_valid("536-90-0000")


def test_actions() -> None:
    text = "mail jane@example.com card 4111111111111111"
    partial = Masker({"email": "partial", "credit_card": "partial"})
    assert partial.mask(text) == "mail ****.com card ****1111"
    hashed = Masker({"email": "hash"}, salt="s1")
    once, again = hashed.mask(text), hashed.mask(text)
    assert once == again and once.startswith("mail [HASH:email:") and "jane" not in once
    assert Masker({"email": "hash"}, salt="s2").mask(text) != once  # the salt changes the hash
    blocking = Masker({"credit_card": "block", "email": "redact"})
    with pytest.raises(Blocked) as err:
        blocking.mask(text)
    assert err.value.detector == "credit_card" and "4111" not in str(err.value)
    assert blocking.mask(text, blocking=False) == "mail [REDACTED:email] card [REDACTED:credit_card]"
    assert Masker({"email": "allow"}).mask(text) is text


def test_overlapping_findings_merge_under_the_specific_name() -> None:
    # The JWT is also a bearer token and a value assigned to "token": one replacement, named jwt.
    assert MASKER.mask(f"Authorization: Bearer {JWT}") == "Authorization: Bearer [REDACTED:jwt]"
    assert MASKER.mask(f"token={JWT}") == "token=[REDACTED:jwt]"


def test_non_ascii_text_keeps_positions() -> None:
    # "İ" lower-cases to two characters: the lower view must still line up with the text.
    text = "İİİ password=Zx9Qw8Er7Ty6Ui5O ünïcödé jane@example.com"
    assert MASKER.mask(text) == "İİİ password=[REDACTED:secret_assignment] ünïcödé [REDACTED:email]"


def test_every_detector_has_a_positive_case() -> None:
    covered = {d for d, _, _ in POSITIVES} | {"private_key"}
    assert covered == set(BY_NAME)


def test_realistic_text_and_benchmark() -> None:
    text = realistic_text(20_000)
    masked = MASKER.mask(text, blocking=False)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "jane.doe@example.com", "4111 1111 1111 1111", "S3cr3t-Pa55w0rd"):
        assert secret not in masked
    assert len(masked.splitlines()) == len(text.splitlines())
    timings = benchmark_masking(runs=3, size=20_000)
    assert timings["findings"] > 0 and 0 < timings["min_ms"] <= timings["median_ms"]
