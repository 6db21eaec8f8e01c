"""Secret and PII detection for the `masking` middleware.

Why compiled regexes of our own rather than a detector library:
- presidio (PII) needs spaCy and a language model: hundreds of MB and tens of milliseconds per
  call, far outside a budget of 5 ms per 100 KB result.
- detect-secrets (Yelp, 1.5) runs each of its plugins over every line in Python, then filters.
  Measured on this machine on `realistic_text()` (100 KB): `SecretsCollection.scan_file` 1.0 s,
  `scan_line` over the lines 2.0 s (and 10,000 "high entropy" hits: every request-id UUID),
  against the 5 ms budget. It has no PII detectors, and it returns values rather than spans.
- Neither validates card numbers (Luhn), IBANs (mod 97) or national ids.

So: one `re` pattern per detector written to let CPython's engine skip ahead in C, a validator
where a pattern cannot decide (Luhn, mod 97, SSN rules, `ipaddress`), and one pre-filter pass that
decides which detectors can match at all (see `_engine.Masker.candidates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.masking._engine import Action, Blocked, Masker
from gateway.masking.detectors import BY_NAME, DETECTORS, PII, SECRETS, Detector

if TYPE_CHECKING:
    from gateway.masking._bench import benchmark_masking, realistic_text


def __getattr__(name: str) -> Any:
    # The benchmark helpers are imported on first use: the gateway itself never needs them.
    if name in ("benchmark_masking", "realistic_text"):
        from gateway.masking import _bench

        return getattr(_bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_masker(salt: str = "") -> Masker:
    """Every detector on, each redacting: the middleware's default."""
    return Masker(dict.fromkeys(BY_NAME, "redact"), salt=salt)


__all__ = [
    "BY_NAME",
    "DETECTORS",
    "PII",
    "SECRETS",
    "Action",
    "Blocked",
    "Detector",
    "Masker",
    "benchmark_masking",
    "default_masker",
    "realistic_text",
]
