"""How long masking takes on a realistic 100 KB tool result (code and log lines, a few secrets)."""

from __future__ import annotations

import random
import statistics
import time

_LOG_TEMPLATES = (
    "2026-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z INFO  [worker-{w}] GET /api/v1/items/{n} 200 {t}ms "
    "request_id={uuid}",
    "2026-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z WARN  [worker-{w}] slow query took {t}ms: "
    "SELECT id, name FROM orders WHERE customer_id = {n} LIMIT 50",
    "2026-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z DEBUG cache miss key=user:{n}:profile ttl=300 "
    "size={t} version=1.{w}.{ms}",
    "2026-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z ERROR [worker-{w}] upstream timeout after {t}ms "
    "(attempt {w}/3), retrying in {s}s",
)
_CODE = '''\
def handle_request(request: Request, session: Session) -> Response:
    """Look the order up and render it; {n} is the default page size."""
    token = request.headers.get("X-Request-Token")
    if token is None:
        raise HTTPException(status_code=401, detail="missing token")
    order = session.query(Order).filter(Order.id == request.path_params["id"]).one_or_none()
    for index, item in enumerate(order.items[::2]):
        total += item.price * item.quantity  # prices in cents since v{w}.{ms}.0
    return JSONResponse({{"id": order.id, "total": total, "items": len(order.items)}})
'''
# Secrets and PII sprinkled in, as they would be in a real dump: about one per 5 KB.
_SENSITIVE = (
    "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "contact: jane.doe@example.com, cc ops-team@corp.example.org",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "db_password = 'S3cr3t-Pa55w0rd-2026!'",
    "customer phone +44 20 7946 0958, card 4111 1111 1111 1111",
    "client connected from 203.0.113.42 (2001:db8::8a2e:370:7334)",
    "reply-to: support@example.net",
)


def realistic_text(size: int = 100_000, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines: list[str] = []
    length = 0
    count = 0
    while length < size:
        count += 1
        if count % 50 == 0:
            line = _SENSITIVE[(count // 50) % len(_SENSITIVE)]
        elif count % 15 == 0:
            line = _CODE.format(n=rng.randint(10, 99), w=rng.randint(1, 9), ms=rng.randint(0, 999))
        else:
            line = rng.choice(_LOG_TEMPLATES).format(
                d=rng.randint(1, 28),
                h=rng.randint(0, 23),
                m=rng.randint(0, 59),
                s=rng.randint(0, 59),
                ms=rng.randint(0, 999),
                w=rng.randint(1, 8),
                n=rng.randint(1, 10**6),
                t=rng.randint(1, 5000),
                uuid=f"{rng.getrandbits(128):032x}",
            )
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines)[:size]


def benchmark_masking(runs: int = 50, size: int = 100_000) -> dict[str, float]:
    """Mask a realistic `size`-character tool result `runs` times with the default configuration
    (every detector on, redacting). Milliseconds: wall-clock min and median, and the median CPU
    time of the masking thread (what a busy machine's scheduling does not inflate)."""
    from gateway.masking import default_masker

    masker = default_masker()
    text = realistic_text(size)
    masked = masker.mask(text, blocking=False)
    assert "AKIAIOSFODNN7EXAMPLE" not in masked  # timing a masker that does not mask is pointless
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        masker.mask(text, blocking=False)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return {
        "size_bytes": float(len(text.encode())),
        "findings": float(masked.count("[REDACTED:")),
        "min_ms": min(wall),
        "median_ms": statistics.median(wall),
        "cpu_median_ms": statistics.median(cpu),
    }
