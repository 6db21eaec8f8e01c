"""The gateway's own `requestState` (gateway/_inputs.py): sealed, bound, single-use, expiring.

A 2025-11-25 backend (misbehave's `ask`) asks for sampling or elicitation mid-call; a 2026-07-28
client gets `input_required` and retries with our `requestState`. Retries are sent raw (httpx) so
that a state can be tampered with, replayed, sent by someone else or to another gateway; each
refusal must be the SDK's wire error at once, and must lose nothing: the genuine state still
continues the call afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INTERNAL_ERROR, INVALID_PARAMS

from gateway._inputs import Binding, InputBridge, InputCaller, StateSeal
from gateway.cluster import Cluster
from gateway.config.cluster import ClusterConfig
from gateway.config.secrets import Secrets
from gateway.config.validation import validate_file
from gateway.errors import ConfigError
from gateway.questions import state_seal
from gateway.relay import Relay
from tests._gateway_process import gateway_process
from tests._infra import Redis
from tests._support import LEGACY, Running, config, messages, misbehave, serve
from tests.front.test_exchange import post

pytestmark = pytest.mark.anyio

WAIT = 60.0
KEY = secrets.token_hex(32)
SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "test-model"}
REFUSED = {
    "code": INVALID_PARAMS,
    "message": "Invalid or expired requestState",
    "data": {"reason": "invalid_request_state"},
}


def asking(**state: Any) -> Any:
    return config({"mb": misbehave("--ask", protocol=LEGACY)}, state={"keys": [KEY], **state})


async def call(
    http: httpx.AsyncClient,
    url: str,
    kinds: list[str],
    state: str | None = None,
    responses: dict[str, Any] | None = None,
    *,
    tool: str = "mb__ask",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One 2026-07-28 `tools/call` (a retry when `state` is given); its JSON-RPC answer."""
    params: dict[str, Any] = {
        "name": tool,
        "arguments": {"kinds": kinds},
        "_meta": {CLIENT_CAPABILITIES_META_KEY: {"sampling": {}, "elicitation": {}}},
    }
    if state is not None:
        params.update(requestState=state, inputResponses=responses or {})
    head, body = post("tools/call", params)
    with anyio.fail_after(WAIT):
        resp = await http.post(url, headers={**head, **(headers or {})}, content=body)
    (answer,) = [m for m in messages(resp) if "id" in m]
    return answer


def round_of(answer: dict[str, Any]) -> tuple[str, list[str]]:
    """The state and the input keys of an `input_required` answer."""
    result = answer.get("result") or {}
    assert result.get("resultType") == "input_required", answer
    return result["requestState"], list(result["inputRequests"])


def completed(answer: dict[str, Any]) -> list[dict[str, Any]]:
    result = answer.get("result") or {}
    assert result.get("resultType") == "complete", answer
    answers: list[dict[str, Any]] = result["structuredContent"]["answers"]
    return answers


def tampered(state: str) -> str:
    """`state` with one character changed (in the sealed part, past the format prefix)."""
    i = len(state) // 2
    return state[:i] + ("A" if state[i] != "A" else "B") + state[i + 1 :]


def relay_of(gw: Running) -> Relay:
    relay: Relay = gw.app.state.relay
    return relay


async def test_a_2026_client_answers_several_rounds_through_the_gateway() -> None:
    """The happy path with the SDK's own client: two rounds (sampling, then elicitation)."""

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult.model_validate(SAMPLED)

    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with (
        serve(asking()) as gw,
        SdkClient(
            gw.url, mode="2026-07-28", sampling_callback=sampling, elicitation_callback=elicitation
        ) as client,
    ):
        with anyio.fail_after(WAIT):
            result = await client.call_tool("mb__ask", {"kinds": ["sampling", "elicitation"]})
        assert len(relay_of(gw).inputs) == 0  # nothing left parked
    assert result.structured_content is not None
    sampled, elicited = result.structured_content["answers"]
    assert sampled["result"]["content"] == SAMPLED["content"], sampled
    assert elicited["result"] == {"action": "accept", "content": {"name": "Ada"}}, elicited


async def test_a_tampered_state_is_refused_and_the_genuine_one_still_works() -> None:
    async with serve(asking()) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        state, keys = round_of(await call(http, gw.url, ["sampling"]))
        assert keys == ["sampling-1"]
        for forged in (tampered(state), state[:-2], "v1.", "not a state", state + "A"):
            assert (await call(http, gw.url, ["sampling"], forged, {"sampling-1": SAMPLED}))[
                "error"
            ] == REFUSED
        (answer,) = completed(await call(http, gw.url, ["sampling"], state, {"sampling-1": SAMPLED}))
        assert answer["result"]["model"] == "test-model"


async def test_a_state_replayed_or_used_twice_is_refused() -> None:
    async with serve(asking()) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        first, _ = round_of(await call(http, gw.url, ["sampling", "sampling"]))
        second, keys = round_of(
            await call(http, gw.url, ["sampling", "sampling"], first, {"sampling-1": SAMPLED})
        )
        assert keys == ["sampling-2"] and second != first
        # The first round's state, again (with the answer to the second round, even): a replay.
        again = await call(http, gw.url, ["sampling", "sampling"], first, {"sampling-2": SAMPLED})
        assert again["error"] == REFUSED
        assert (
            len(
                completed(await call(http, gw.url, ["sampling", "sampling"], second, {"sampling-2": SAMPLED}))
            )
            == 2
        )
        # The last state, used a second time after the call is over.
        assert (await call(http, gw.url, ["sampling", "sampling"], second, {"sampling-2": SAMPLED}))[
            "error"
        ] == REFUSED


async def test_an_expired_state_is_refused() -> None:
    async with serve(asking()) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        state, _ = round_of(await call(http, gw.url, ["sampling"]))
        seal = relay_of(gw).inputs.seal
        seal.clock = lambda: time.time() + seal.ttl + 1  # the client took longer than `state.ttl`
        assert (await call(http, gw.url, ["sampling"], state, {"sampling-1": SAMPLED}))["error"] == REFUSED
        seal.clock = time.time
        assert completed(await call(http, gw.url, ["sampling"], state, {"sampling-1": SAMPLED}))


async def test_another_identitys_state_or_another_requests_is_refused() -> None:
    alice, bob = secrets.token_hex(16), secrets.token_hex(16)
    keys = [
        {"name": n, "key": "sha256:" + hashlib.sha256(k.encode()).hexdigest()}
        for n, k in (("alice", alice), ("bob", bob))
    ]
    cfg = config(
        {"mb": misbehave("--ask", protocol=LEGACY)},
        state={"keys": [KEY]},
        middleware=[{"use": "auth", "options": {"api_keys": keys}}],
    )
    as_alice, as_bob = {"x-api-key": alice}, {"x-api-key": bob}
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        state, _ = round_of(await call(http, gw.url, ["sampling"], headers=as_alice))
        answered = {"sampling-1": SAMPLED}
        assert (await call(http, gw.url, ["sampling"], state, answered, headers=as_bob))["error"] == REFUSED
        stolen = await call(http, gw.url, ["sampling"], state, answered, tool="mb__echo", headers=as_alice)
        assert stolen["error"] == REFUSED  # bound to the tool it was issued for
        assert completed(await call(http, gw.url, ["sampling"], state, answered, headers=as_alice))


async def test_a_state_sealed_with_a_key_this_gateway_lacks_is_refused() -> None:
    other = config({"mb": misbehave("--ask", protocol=LEGACY)}, state={"keys": [secrets.token_hex(32)]})
    async with (
        serve(asking()) as gw,
        serve(other) as stranger,
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        state, _ = round_of(await call(http, gw.url, ["sampling"]))
        assert (await call(http, stranger.url, ["sampling"], state, {"sampling-1": SAMPLED}))[
            "error"
        ] == REFUSED


def test_rotated_keys_open_states_of_the_old_key() -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    sealed = StateSeal([old]).seal({"c": "x"})
    assert StateSeal([new, old]).open(sealed)["c"] == "x"


async def test_a_second_process_with_the_key_refuses_a_call_parked_in_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2025-11-25 backend's call waits in the process that started it: another process opens
    the state (same key) but cannot continue it, and says so at once instead of hanging."""
    monkeypatch.setenv("GATEWAY_TEST_STATE_KEY", KEY)
    cfg = {
        "servers": {"mb": misbehave("--ask", protocol=LEGACY)},
        "state": {"keys": ["${env:GATEWAY_TEST_STATE_KEY}"]},
    }
    async with (
        gateway_process(tmp_path, cfg, name="first") as first,
        gateway_process(tmp_path, cfg, name="second") as second,
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        state, _ = round_of(await call(http, first.url, ["sampling"]))
        with anyio.fail_after(WAIT / 2):
            refused = await call(http, second.url, ["sampling"], state, {"sampling-1": SAMPLED})
        assert refused["error"]["code"] == INVALID_PARAMS
        assert "another gateway process" in refused["error"]["message"], refused
        assert completed(await call(http, first.url, ["sampling"], state, {"sampling-1": SAMPLED}))
    assert KEY not in first.log_text() + second.log_text()


@pytest.mark.redis
async def test_another_replica_continues_a_call_parked_in_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis: Redis
) -> None:
    """With `cluster.redis`, a retry reaching another replica is continued by the one holding the
    call (over the cluster's bus): each round may land on either, and the call completes. Once the
    holder is gone, a retry is refused within the bounded wait, not hung."""
    monkeypatch.setenv("GATEWAY_TEST_STATE_KEY", KEY)
    cfg = {
        "servers": {"mb": misbehave("--ask", protocol=LEGACY)},
        "state": {"keys": ["${env:GATEWAY_TEST_STATE_KEY}"]},
        "cluster": {"redis": redis.url, "key_prefix": f"t{secrets.token_hex(4)}"},
    }
    elicited = {"action": "accept", "content": {"name": "Ada"}}
    async with (
        gateway_process(tmp_path, cfg, name="first") as first,
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        async with gateway_process(tmp_path, cfg, name="second") as second:
            state, keys = round_of(await call(http, first.url, ["sampling", "elicitation"]))
            assert keys == ["sampling-1"]
            with anyio.fail_after(WAIT):
                state, keys = round_of(
                    await call(http, second.url, ["sampling", "elicitation"], state, {"sampling-1": SAMPLED})
                )
            assert keys == ["elicitation-2"]
            with anyio.fail_after(WAIT):
                answer = await call(
                    http, second.url, ["sampling", "elicitation"], state, {"elicitation-2": elicited}
                )
            assert [a["result"] for a in completed(answer)] == [SAMPLED, elicited]
            state, _ = round_of(await call(http, second.url, ["sampling"]))  # parked in the second
        with anyio.fail_after(WAIT / 2):
            refused = await call(http, first.url, ["sampling"], state, {"sampling-1": SAMPLED})
        assert refused["error"]["code"] == INVALID_PARAMS
        assert "another gateway process" in refused["error"]["message"], refused
    assert KEY not in first.log_text() + second.log_text()


@pytest.mark.redis
async def test_a_call_failing_for_another_process_is_its_clients_error_not_a_crash_here(
    redis: Redis,
) -> None:
    """Two input bridges on a real Redis bus: a call held by `a` fails (not with an MCP error)
    while `b` continues it for its client; `b`'s client gets an internal error, and `a` goes on."""
    prefix = f"t{secrets.token_hex(4)}"
    clusters = [Cluster(ClusterConfig(redis=redis.url, key_prefix=prefix, replica_id=n)) for n in "ab"]
    seal = StateSeal([KEY])
    a, b = InputBridge(seal), InputBridge(seal)
    a.attach(clusters[0].bus())
    b.attach(clusters[1].bus())
    binding = Binding(who=("api_key", None, "alice"), method="tools/call", target="mb__ask")

    async def failing(rounds: InputCaller) -> dict[str, Any]:
        await rounds.ask("sampling/createMessage", {})
        raise RuntimeError("the backend call broke")

    async def fine(rounds: InputCaller) -> dict[str, Any]:
        return {"content": [], "isError": False}

    async with clusters[0].bus().running(), clusters[1].bus().running(), a.running(), b.running():
        with anyio.fail_after(WAIT):
            for cluster in clusters:
                await cluster.bus().connected.wait()
            first = await a.next_result(a.start("alice", None, failing, binding))
            (key,) = first["inputRequests"]
            with pytest.raises(MCPError) as refused:
                await b.continue_call(first["requestState"], {key: SAMPLED}, None, binding)
            assert refused.value.error.code == INTERNAL_ERROR
            assert await a.next_result(a.start("alice", None, fine, binding)) == {
                "content": [],
                "isError": False,
            }


def test_state_keys_are_secrets_and_must_be_long_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_STATE_KEY", KEY)
    known = Secrets()
    cfg = config({}, state={"keys": ["${env:GATEWAY_TEST_STATE_KEY}"]})
    state_seal(cfg.state, known)
    assert KEY not in known.mask(f"the key is {KEY}")
    # A key too short is a config problem, reported by every command before anything starts.
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"state": {"keys": ["${env:GATEWAY_TEST_STATE_KEY}"]}}))
    monkeypatch.setenv("GATEWAY_TEST_STATE_KEY", "short")
    with pytest.raises(ConfigError, match=r"state\.keys\.0: shorter than 32 bytes"):
        validate_file(path)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        state_seal(cfg.state, Secrets())
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        config({}, state={"keys": ["short"]})
