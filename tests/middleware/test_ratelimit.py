"""The ratelimit middleware: scopes and keys, refusals that never reach the backend, the bulkhead,
an unanswering store, and one global limit shared by two gateway processes through a real Redis."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import psutil
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.config import parse_config
from gateway.errors import RATE_LIMITED, ConfigError, RateLimited
from gateway.middleware import Call, Identity, Result, instantiate
from gateway.middleware import _ratelimit_store as store_module
from gateway.middleware._bulkhead import Bulkhead, ConcurrencyOptions, Full, SharedBulkhead
from gateway.middleware.ratelimit import RateLimit, RateLimitOptions
from tests._gateway_process import gateway_process
from tests._infra import Redis
from tests._support import config, free_port, misbehave, serve, wait_until

pytestmark = pytest.mark.anyio
LOGGER = "gateway.middleware.ratelimit"


def tool_call(name: str = "mb__echo", who: str = "alice", roles: frozenset[str] = frozenset()) -> Call:
    return Call(method="tools/call", params={}, identity=Identity(who, roles=roles), name=name, server="mb")


until = functools.partial(wait_until, timeout=20, interval=0.005)


class Backend:
    """A stand-in terminal for unit tests: counts what got through."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, call: Call) -> Result:
        self.calls += 1
        return {}


# -- options -----------------------------------------------------------------------------------------


def test_bad_options_are_config_errors_naming_the_key() -> None:
    cfg = parse_config(
        "middleware:\n"
        "  - use: ratelimit\n    options: {per_identity: lots}\n"
        "  - use: ratelimit\n    options: {strategy: leaky-bucket, global: 10/minute}\n"
        "  - use: ratelimit\n    options: {overrides: [{per_identity: 5/minute}]}\n"
        "  - use: ratelimit\n    options: {concurrency: {'*': {max: 0}}}\n"
        "  - use: ratelimit\n    options: {storage: 'nosuch://:hunter2@127.0.0.1:1/0'}\n"
        "  - use: ratelimit\n    options: {storage: 'redis://${env:RL_TEST_UNSET}@127.0.0.1:1/0'}\n"
    )
    os.environ.pop("RL_TEST_UNSET", None)
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    problems = err.value.problems
    assert len(problems) == 6, problems
    assert "middleware[0] (ratelimit).options.per_identity" in problems[0] and "100/minute" in problems[0]
    assert "middleware[1] (ratelimit).options.strategy" in problems[1]
    assert "middleware[2] (ratelimit).options.overrides.0" in problems[2] and "roles" in problems[2]
    assert "middleware[3] (ratelimit).options.concurrency.*.max" in problems[3]
    assert "unknown scheme 'nosuch'" in problems[4] and "hunter2" not in problems[4]
    assert "RL_TEST_UNSET" in problems[5]


# -- scopes and keys ---------------------------------------------------------------------------------


def test_scopes_apply_narrowest_first_with_distinct_keys() -> None:
    rl = RateLimit(
        per_tool="10/second",
        per_identity="100/minute",
        per_server={"*": "500/minute", "git": "50/minute"},
        lists="5/second",
        **{"global": "1000/minute"},
    )
    checks = rl.checks(tool_call())
    assert [(rule.scope, rule.text, ids) for rule, ids in checks] == [
        ("per_tool", "10/second", ("tool", "alice", "t", "mb__echo")),
        ("per_identity", "100/minute", ("identity", "alice")),
        ("per_server", "500/minute", ("server", "mb")),
        ("global", "1000/minute", ("global",)),
    ]
    git = Call(method="prompts/get", params={}, identity=Identity("bob"), name="git__p", server="git")
    (first, first_ids), *_ = rl.checks(git)
    assert (first.scope, first.text, first_ids) == ("per_tool", "10/second", ("tool", "bob", "p", "git__p"))
    assert ("per_server", "50/minute") in [(r.scope, r.text) for r, _ in rl.checks(git)]
    # Resource URIs are chosen by the client: no per-URI counters, but every other scope applies.
    read = Call(method="resources/read", params={}, identity=Identity("bob"), name="mb://x/1", server="mb")
    assert [r.scope for r, _ in rl.checks(read)] == ["per_identity", "per_server", "global"]
    # Everything else is on the separate lists budget; backend notifications are never limited.
    for method in ("tools/list", "prompts/list", "resources/templates/list", "resources/subscribe"):
        assert [(r.scope, ids) for r, ids in rl.checks(Call(method=method, params={}))] == [
            ("lists", ("lists", "anonymous"))
        ]
    note = Call(method="notifications/message", params={}, kind="notification", server="mb")
    assert rl.checks(note) == []
    # Names containing the key separator cannot collide with other (identity, tool) pairs.
    keys = set()
    for who, tool in (("a/b", "c"), ("a", "b/c"), ("a%2Fb", "c")):
        (rule, ids), *_ = rl.checks(tool_call(tool, who))
        keys.add(rule.items[0].key_for(*ids))
    assert len(keys) == 3


def test_overrides_first_match_wins_and_null_removes_a_limit() -> None:
    rl = RateLimit(
        per_identity="100/minute",
        per_tool="10/second",
        overrides=[
            {"roles": ["admin"], "per_identity": "1000/minute", "lists": None},
            {"identities": ["ci-bot"], "per_tool": None},
            {"roles": ["admin", "ops"], "per_identity": "1/minute"},
        ],
    )
    admin = {r.scope: r.text for r, _ in rl.checks(tool_call(roles=frozenset({"ops", "admin"})))}
    assert admin == {"per_tool": "10/second", "per_identity": "1000/minute"}
    assert (
        rl.checks(Call(method="tools/list", params={}, identity=Identity("x", roles=frozenset({"admin"}))))
        == []
    )
    bot = {r.scope: r.text for r, _ in rl.checks(tool_call(who="ci-bot"))}
    assert bot == {"per_identity": "100/minute"}
    ops = {r.scope: r.text for r, _ in rl.checks(tool_call(roles=frozenset({"ops"})))}
    assert ops == {"per_tool": "10/second", "per_identity": "1/minute"}


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
async def test_the_call_after_the_limit_is_refused_with_retry_after(strategy: str) -> None:
    rl = RateLimit(strategy=strategy, per_identity="3/minute")
    backend = Backend()
    for _ in range(3):
        await rl(tool_call(), backend)
    with pytest.raises(RateLimited) as err:
        await rl(tool_call(), backend)
    assert backend.calls == 3
    assert err.value.code == RATE_LIMITED == -32029
    assert err.value.data["limit"] == "3/minute" and err.value.data["scope"] == "per_identity"
    assert 0 < err.value.data["retry_after"] <= 60
    assert "'alice'" in err.value.message
    await rl(tool_call(who="bob"), backend)  # another identity has its own budget
    assert backend.calls == 4


async def test_a_refusal_by_a_narrower_limit_leaves_the_wider_budget_untouched() -> None:
    rl = RateLimit(per_identity="2/minute", **{"global": "3/minute"})
    backend = Backend()
    await rl(tool_call(), backend)
    await rl(tool_call(), backend)
    for _ in range(2):  # refused by alice's own limit, before the global counter is touched
        with pytest.raises(RateLimited):
            await rl(tool_call(), backend)
    await rl(tool_call(who="bob"), backend)
    with pytest.raises(RateLimited) as err:
        await rl(tool_call(who="bob"), backend)
    assert err.value.data["scope"] == "global" and backend.calls == 3


async def test_lists_have_their_own_budget() -> None:
    rl = RateLimit(per_identity="1/minute", lists="2/minute")
    backend = Backend()
    await rl(tool_call(), backend)
    listing = Call(method="tools/list", params={}, identity=Identity("alice"))
    await rl(listing, backend)
    await rl(listing, backend)  # the exhausted call budget does not block lists
    with pytest.raises(RateLimited) as err:
        await rl(listing, backend)
    assert err.value.data["scope"] == "lists" and backend.calls == 3


def expired(storage: Any) -> bool:
    """Whether every window in a `limits` MemoryStorage has run out (by the store's wall clock)."""
    now = time.time()
    moving = all(entry.expiry <= now for entries in storage.events.values() for entry in entries)
    return moving and all(at <= now for at in storage.expirations.values())


async def test_memory_store_sweeps_expired_windows_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    rl = RateLimit(per_identity="5/second", per_tool="5/second")
    storage: Any = rl.storage
    monkeypatch.setattr(store_module, "_SWEEP_EVERY", 0.0)
    await rl(tool_call(who="gone"), Backend())
    assert len(storage.events) == 2
    # limits reads the wall clock itself (`time.time()`, no clock to inject): wait, bounded, until
    # the store's own entries say the window is over.
    await wait_until(lambda: expired(storage), timeout=20)
    await rl(tool_call(who="kept"), Backend())  # a hit triggers the sweep
    assert {key.split("/")[2] for key in storage.events} == {"kept"}
    assert all("gone" not in key for key in storage.locks)
    # limits' own clean-up (a task and a thread-pool job per key, per hit) never started.
    assert storage.timer is None


# -- the bulkhead ------------------------------------------------------------------------------------


async def test_bulkhead_queues_boundedly_and_times_out() -> None:
    bulkhead = Bulkhead(ConcurrencyOptions(max=1, queue=1, queue_timeout=0.2))
    await bulkhead.acquire()
    queued = anyio.Event()
    outcome: list[str] = []

    async def second() -> None:
        queued.set()
        try:
            await bulkhead.acquire()
        except Full as exc:
            outcome.append("timed out" if exc.timed_out else "full")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await queued.wait()
            await until(lambda: bulkhead.waiting == 1)
            with pytest.raises(Full) as err:  # the line holds one
                await bulkhead.acquire()
            assert not err.value.timed_out
    assert outcome == ["timed out"]
    assert (bulkhead.in_flight, bulkhead.waiting) == (1, 0)
    bulkhead.release()
    assert bulkhead.in_flight == 0
    await bulkhead.acquire()  # the timed-out waiter did not keep a slot
    bulkhead.release()


async def test_bulkhead_hands_slots_over_in_order() -> None:
    bulkhead = Bulkhead(ConcurrencyOptions(max=1, queue=5, queue_timeout=30))
    await bulkhead.acquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await bulkhead.acquire()
        order.append(n)
        bulkhead.release()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
                await until(lambda: bulkhead.waiting > n)  # noqa: B023 - awaited before n changes
            bulkhead.release()
    assert order == [0, 1, 2] and bulkhead.in_flight == 0


# -- an unanswering store ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["deny", "allow"])
async def test_unreachable_store_follows_policy_and_logs_once(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    rl = RateLimit(
        storage=f"redis://:s3cret-pw@127.0.0.1:{port}/0", per_identity="100/minute", on_storage_error=policy
    )
    backend = Backend()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(5):
        if policy == "deny":
            with pytest.raises(RateLimited) as err:
                await rl(tool_call(), backend)
            assert err.value.data["scope"] == "storage" and "s3cret" not in err.value.message
        else:
            await rl(tool_call(), backend)
    assert backend.calls == (5 if policy == "allow" else 0)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and "does not answer" in warnings[0]
    assert "s3cret" not in warnings[0] and f"127.0.0.1:{port}" in warnings[0]


@pytest.mark.parametrize("policy", ["deny", "allow"])
async def test_a_cluster_wide_cap_whose_store_does_not_answer_follows_policy(policy: str) -> None:
    rl = RateLimit(
        storage=f"redis://127.0.0.1:{free_port()}/0",
        concurrency={"mb": {"max": 1}},
        on_storage_error=policy,
    )
    assert isinstance(rl.bulkhead("mb"), SharedBulkhead)
    backend = Backend()
    for _ in range(3):  # the first finds out, the next ones do not ask for a second
        if policy == "deny":
            with pytest.raises(RateLimited) as err:
                await rl(tool_call(), backend)
            assert err.value.data["scope"] == "storage"
        else:
            await rl(tool_call(), backend)  # uncapped, like unchecked rate limits
    assert backend.calls == (3 if policy == "allow" else 0)


# -- end to end through a real gateway ------------------------------------------------------------------


async def test_limited_call_is_refused_end_to_end_and_never_reaches_the_backend() -> None:
    cfg = config(
        {"mb": misbehave()},
        middleware=[{"use": "ratelimit", "options": {"per_tool": "3/minute", "lists": None}}],
    )
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy", logging_callback=on_log) as client:
        for n in range(3):
            await client.call_tool("mb__log", {"level": "warning", "message": f"call {n}"})
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__log", {"level": "warning", "message": "call 3"})
        assert err.value.code == RATE_LIMITED
        assert err.value.data["limit"] == "3/minute" and err.value.data["scope"] == "per_tool"
        assert 0 < err.value.data["retry_after"] <= 60
        # Another tool is not limited; its answer comes after anything the backend said before.
        assert (await client.call_tool("mb__echo", {"text": "x"})).is_error is not True
        await until(lambda: len(logs) >= 3)
    assert len(logs) == 3 and all(f"call {n}" in logs[n] for n in range(3))


async def test_bulkhead_refuses_a_second_concurrent_call_end_to_end() -> None:
    cfg = config(
        {"mb": misbehave()},
        middleware=[{"use": "ratelimit", "options": {"concurrency": {"mb": {"max": 1, "queue": 0}}}}],
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["mb"]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "mb__sleep", {"seconds": 30})
                await until(lambda: backend.in_flight == 1)
                with pytest.raises(MCPError) as err:
                    await client.call_tool("mb__sleep", {"seconds": 0.1})
                assert backend.in_flight == 1  # the refused call never reached the backend
                tg.cancel_scope.cancel()
            assert err.value.code == RATE_LIMITED
            assert err.value.data["scope"] == "concurrency" and err.value.data["server"] == "mb"
            assert "queue full" in err.value.message  # refused at once, not after a wait
            await until(lambda: backend.in_flight == 0)
            # The cancelled call gave its slot back.
            assert (await client.call_tool("mb__echo", {"text": "again"})).is_error is not True


# -- a real Redis ------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_two_gateways_share_one_global_limit_through_redis(redis: Redis, tmp_path: Path) -> None:
    options = {"storage": redis.url, "global": "30/minute", "key_prefix": f"t{uuid.uuid4().hex[:8]}"}
    cfg = {"servers": {"mb": misbehave()}, "middleware": [{"use": "ratelimit", "options": options}]}
    async with (
        gateway_process(tmp_path, cfg, name="gateway-a") as a,
        gateway_process(tmp_path, cfg, name="gateway-b") as b,
    ):
        accepted: list[int] = []
        refused: list[MCPError] = []
        async with (
            SdkClient(a.url, mode="legacy") as first,
            SdkClient(b.url, mode="2026-07-28") as second,
        ):
            clients = [first, second]

            async def worker(w: int) -> None:
                for n in range(10):  # each worker alternates between the two gateways
                    client = clients[(w + n) % 2]
                    try:
                        await client.call_tool("mb__echo", {"text": f"{w}.{n}"})
                        accepted.append((w + n) % 2)
                    except MCPError as exc:
                        refused.append(exc)

            with anyio.fail_after(50):  # well inside the minute of the window
                async with anyio.create_task_group() as tg:
                    for w in range(4):
                        tg.start_soon(worker, w)
        assert len(accepted) == 30 and len(refused) == 10
        assert set(accepted) == {0, 1}  # both gateways let calls through: the budget is shared
        assert all(e.code == RATE_LIMITED and e.data["scope"] == "global" for e in refused)
        assert all(0 < e.data["retry_after"] <= 60 for e in refused)
        for gateway in (a, b):  # a graceful stop, whose log is read below
            gateway.process.terminate()
        for gateway in (a, b):
            await gateway.wait(30)
    for gateway in (a, b):
        assert "Traceback" not in gateway.log_text()


@pytest.mark.redis
async def test_redis_outage_denies_then_recovers(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    options = {"storage": redis.url, "per_identity": "100/minute", "key_prefix": f"t{uuid.uuid4().hex[:8]}"}
    cfg = config({"mb": misbehave()}, middleware=[{"use": "ratelimit", "options": options}])
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        assert (await client.call_tool("mb__echo", {"text": "up"})).is_error is not True
        await anyio.to_thread.run_sync(redis.stop)
        for _ in range(5):
            with pytest.raises(MCPError) as err:
                await client.call_tool("mb__echo", {"text": "down"})
            assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "storage"
        await anyio.to_thread.run_sync(redis.start)
        with anyio.fail_after(20):  # the store is asked again once a second
            while True:
                try:
                    await client.call_tool("mb__echo", {"text": "back"})
                    break
                except MCPError as exc:
                    assert exc.data["scope"] == "storage"
                    await anyio.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2, messages
    assert "does not answer" in messages[0] and "answers again" in messages[1]


@pytest.mark.redis
async def test_a_redis_answering_late_is_waited_for_not_taken_for_down(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimit(storage=redis.url, per_identity="100/minute", storage_timeout=0.5, key_prefix="late")
    backend = Backend()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await rl(tool_call(), backend)  # connected
    # Redis busy for 1.5 s, as under a load spike: it answers, late. Paused from a connection of
    # its own; the pause holds every other client's commands, including the gateway's.
    redis.command("CLIENT", "PAUSE", "1500", "ALL")
    started = time.monotonic()
    await rl(tool_call(), backend)
    # The call did meet the paused Redis (its first try timed out): not a vacuous pass.
    assert time.monotonic() - started >= 0.5
    assert backend.calls == 2
    await rl(tool_call(), backend)  # and the store was not marked down
    assert backend.calls == 3
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []
    stats = await rl.limiter.get_window_stats(rl.checks(tool_call())[0][0].items[0], "identity", "alice")
    assert 3 <= 100 - stats.remaining <= 4  # a retried hit may count twice, never zero times


@pytest.mark.redis
async def test_a_redis_that_stops_answering_is_down_after_one_retry(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimit(storage=redis.url, per_identity="100/minute", storage_timeout=0.3, key_prefix="hung")
    backend = Backend()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await rl(tool_call(), backend)
    # Longer than both tries (0.3 s + 1.2 s): as documented, deny.
    redis.command("CLIENT", "PAUSE", "6000", "ALL")
    with pytest.raises(RateLimited) as err:
        await rl(tool_call(), backend)
    assert err.value.data["scope"] == "storage" and backend.calls == 1
    with anyio.fail_after(30):  # once the pause is over, the store is asked again once a second
        while True:
            try:
                await rl(tool_call(), backend)
                break
            except RateLimited as exc:
                assert exc.data["scope"] == "storage"
                await anyio.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2 and "does not answer" in messages[0] and "answers again" in messages[1]


def test_the_storage_uri_may_hold_references_resolved_with_the_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RL_TEST_STORAGE", "memory://")
    rl = RateLimit(storage="${env:RL_TEST_STORAGE}", per_identity="10/minute")
    assert rl.options.storage == "memory://" and rl.storage_label == "memory://"
    monkeypatch.setenv("RL_TEST_PASSWORD", "pw-from-env")
    options = RateLimitOptions(storage="redis://:${env:RL_TEST_PASSWORD}@h:1/0")
    assert options.storage == "redis://:pw-from-env@h:1/0" and "pw-from-env" not in repr(options)


# -- a cluster-wide concurrency cap ------------------------------------------------------------------


def capped(redis: Redis, prefix: str, **concurrency: Any) -> tuple[dict[str, Any], str]:
    """A gateway config whose `mb` is capped through `redis`, and the Redis key of the cap."""
    options = {"storage": redis.url, "key_prefix": prefix, "concurrency": {"mb": concurrency}}
    lease = concurrency.pop("lease", None)
    if lease is not None:
        options["concurrency_lease"] = lease
    return {"servers": {"mb": misbehave()}, "middleware": [{"use": "ratelimit", "options": options}]}, (
        f"{prefix}:concurrency:mb"
    )


@pytest.mark.redis
async def test_shared_bulkheads_count_together_queue_boundedly_and_time_out(redis: Redis) -> None:
    spec, key = capped(redis, f"t{uuid.uuid4().hex[:8]}", max=1, queue=1, queue_timeout=2)
    options = spec["middleware"][0]["options"]
    one, two = RateLimit(**options), RateLimit(**options)
    async with one.lifespan(), two.lifespan():
        a, b = one.bulkhead("mb"), two.bulkhead("mb")
        assert isinstance(a, SharedBulkhead) and isinstance(b, SharedBulkhead)
        token = await a.acquire()
        outcome: list[bool] = []

        async def second() -> None:
            try:
                await b.acquire()
            except Full as exc:
                outcome.append(exc.timed_out)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await until(lambda: b.waiting == 1)
                with pytest.raises(Full) as err:  # b's line holds one
                    await b.acquire()
                assert not err.value.timed_out
        assert outcome == [True] and b.waiting == 0  # a's slot was never given up
        await a.release(token)
        token = await b.acquire()  # the slot a gave back, at once
        assert (a.in_flight, b.in_flight) == (0, 1)
        await b.release(token)
        assert int(redis.command("ZCARD", key)) == 0


@pytest.mark.redis
async def test_a_concurrency_cap_holds_across_two_gateways(redis: Redis) -> None:
    spec, key = capped(redis, f"t{uuid.uuid4().hex[:8]}", max=2, queue=1, queue_timeout=120, lease=3)
    cfg = config(spec["servers"], middleware=spec["middleware"])

    def held() -> int:
        return int(redis.command("ZCARD", key))

    def leases() -> dict[bytes, float]:
        return dict(redis.command("ZRANGE", key, "0", "-1", "WITHSCORES"))

    async with (
        serve(cfg) as a,
        serve(cfg) as b,
        SdkClient(a.url, mode="legacy") as on_a,
        SdkClient(b.url, mode="2026-07-28") as on_b,
    ):
        first = anyio.CancelScope()
        third: list[types.CallToolResult] = []

        async def sleep_on_a() -> None:
            with first:
                await on_a.call_tool("mb__sleep", {"seconds": 120})

        async def third_on_b() -> None:
            third.append(await on_b.call_tool("mb__echo", {"text": "third"}))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sleep_on_a)
                tg.start_soon(on_b.call_tool, "mb__sleep", {"seconds": 120})
                await until(lambda: held() == 2)
                # Both gateways extend their slots' leases while the calls run.
                taken = leases()
                assert len(taken) == 2
                await until(lambda: all(leases().get(m, 0) > at for m, at in taken.items()))
                # b runs one call of its own under a max of 2: the third waits because of a's.
                tg.start_soon(third_on_b)
                limiter: Any = b.app.state.relay.middlewares[0]
                bulkhead = limiter.bulkhead("mb")
                await until(lambda: bulkhead.waiting == 1)
                with pytest.raises(MCPError) as err:  # b's line holds one: refused at once
                    await on_b.call_tool("mb__echo", {"text": "fourth"})
                assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "concurrency"
                assert "queue full" in err.value.message
                assert held() == 2 and not third
                assert b.fleet.backends["mb"].in_flight == 1  # neither reached the backend
                first.cancel()  # a's call ends: its slot goes to the call waiting on b
                await until(lambda: bool(third))
                assert third[0].is_error is not True
                assert third[0].content[0].text.endswith("third")  # type: ignore[union-attr]
                tg.cancel_scope.cancel()
        await until(lambda: held() == 0)  # every slot was given back


@pytest.mark.redis
async def test_the_slots_of_a_gateway_killed_mid_call_are_freed_after_the_lease(
    redis: Redis, tmp_path: Path
) -> None:
    spec, key = capped(redis, f"t{uuid.uuid4().hex[:8]}", max=1, queue=1, queue_timeout=120, lease=6)
    async with (
        gateway_process(tmp_path, spec, name="gateway-a") as a,
        serve(config(spec["servers"], middleware=spec["middleware"])) as b,
    ):
        left = a.descendants()
        limiter: Any = b.app.state.relay.middlewares[0]
        bulkhead = limiter.bulkhead("mb")
        try:
            results: list[types.CallToolResult] = []
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:

                    async def sleep_on_a() -> None:
                        with suppress(Exception):  # its gateway dies under it
                            async with SdkClient(a.url, mode="2026-07-28") as on_a:
                                await on_a.call_tool("mb__sleep", {"seconds": 120})

                    async def echo_on_b() -> None:
                        async with SdkClient(b.url, mode="legacy") as on_b:
                            results.append(await on_b.call_tool("mb__echo", {"text": "after the lease"}))

                    tg.start_soon(sleep_on_a)
                    await until(lambda: int(redis.command("ZCARD", key)) == 1)
                    a.process.send_signal(signal.SIGKILL)  # mid-call: no release, no more renewals
                    await a.wait(30)
                    tg.start_soon(echo_on_b)
                    # The dead gateway's slot still counts: b's call waits (its queue_timeout is far
                    # longer than the lease: a slot kept forever would end in a refusal, not a result).
                    await until(lambda: bulkhead.waiting == 1 or bool(results))
                    assert not results, "the dead gateway's slot was free at once"
                    await until(lambda: bool(results))
                    tg.cancel_scope.cancel()
            assert results[0].is_error is not True and bulkhead.waiting == 0
        finally:  # the backend the dead gateway left behind
            for proc in left:
                with suppress(psutil.NoSuchProcess):
                    proc.kill()
