"""Secret and PII detection for the `masking` middleware.

Why compiled regexes of our own rather than a detector library:
- presidio (PII) needs spaCy and a language model: hundreds of MB and tens of milliseconds per
  call, far outside a budget of 5 ms per 100 KB result.
- detect-secrets (Yelp, 1.5) works line by line, running each of its ~25 plugins over every line
  in Python and then filtering; measured here on the benchmark text below it takes well over
  100 ms per 100 KB (see `benchmark_masking`), has no PII detectors, and returns secret values
  rather than spans, so the text would have to be searched again to replace them.
- Neither validates card numbers (Luhn), IBANs (mod 97) or national ids.

So: one `re` pattern per detector written to let CPython's engine skip ahead in C, a validator
where a pattern cannot decide (Luhn, mod 97, SSN rules, `ipaddress`), and one pre-filter pass that
decides which detectors can match at all (see `_engine.Masker.candidates`).
"""

from __future__ import annotations

from gateway.masking._bench import benchmark_masking, realistic_text
from gateway.masking._engine import ACTIONS, Action, Blocked, Masker
from gateway.masking.detectors import BY_NAME, DETECTORS, PII, SECRETS, Detector


def default_masker(salt: str = "") -> Masker:
    """Every detector on, each redacting: the middleware's default."""
    return Masker(dict.fromkeys(BY_NAME, "redact"), salt=salt)


__all__ = [
    "ACTIONS",
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
