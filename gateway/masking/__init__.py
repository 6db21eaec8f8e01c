"""Secret and PII detection for the `masking` middleware.

Why compiled regexes of our own rather than a detector library:
- presidio (PII) needs spaCy and a language model: hundreds of MB and tens of milliseconds per
  call, far outside a budget of 5 ms per 100 KB result.
- detect-secrets (Yelp, 1.5) runs each of its plugins over every line in Python, then filters.
  Measured on this machine on the benchmark's `realistic_text()` (100 KB, tests/bench/masking.py):
  `SecretsCollection.scan_file` 1.0 s, `scan_line` over the lines 2.0 s (and 10,000 "high
  entropy" hits: every request-id UUID), against the 5 ms budget. It has no PII detectors, and it
  returns values rather than spans.
- Neither validates card numbers (Luhn), IBANs (mod 97) or national ids.

So: one `re` pattern per detector written to let CPython's engine skip ahead in C, a validator
where a pattern cannot decide (Luhn, mod 97, SSN rules, `ipaddress`), and one pre-filter pass that
decides which detectors can match at all (see `_engine.Masker.candidates`).
"""

from __future__ import annotations

from gateway.masking._engine import Action, Blocked, Masker
from gateway.masking.detectors import BY_NAME, DETECTORS, PII, SECRETS, Detector


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
    "default_masker",
]
