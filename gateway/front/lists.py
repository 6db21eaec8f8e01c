"""List results shaped and encoded once per list, not once per request.

Shaping a result the SDK's way (`_sdk.result_shaper`: validated against the revision's schema,
then dumped) and encoding it cost about 25 ms of CPU for a list of a thousand tools: more than a
hundred relayed calls. Yet a list result is the same list object request after request: the
endpoint's view keeps its lists until the catalogue changes (`gateway.endpoints`), and a
middleware that filters per caller keeps its filtered copy per list (the `auth` one does).

So `ListShaper` shapes a list's items once per (list object, method, revision) and keeps them
with their JSON encoding, as an `Encoded` list; each request then shapes only the rest of its
result (cache hints, `resultType`, the `serverInfo` stamp: a handful of fields) and gets the
kept items. `_sdk.result_json` writes an `Encoded` list's bytes as they are. A list object
that is not the one kept (a new view, a newly filtered copy) is shaped anew: nothing needs
invalidating, and the bytes are exactly those the SDK's shaping would give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway._rewrite import Result

Shaper = Callable[[str, str, Any], dict[str, Any]]

# The list methods, and the result key of their items.
LIST_KEYS: Mapping[str, str] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
# Below this many items shaping the whole result costs less than keeping it.
_WORTH_KEEPING = 32
_KEPT = 128  # lists kept (views x revisions x filtered copies); all forgotten when full


class Encoded(list[Any]):
    """A shaped list of items that carries its own JSON (compact, as `_sdk.result_json` writes)."""

    __slots__ = ("json",)

    def __init__(self, items: list[Any], encoded: bytes) -> None:
        super().__init__(items)
        self.json = encoded


class ListShaper:
    """`shape` (the SDK's result shaping), keeping the shaped items of large lists."""

    def __init__(
        self, shape: Shaper, encode: Callable[[list[Any]], bytes], generation: Callable[[], int]
    ) -> None:
        """`generation()`: changes whenever the lists do (`Fleet.generation`): what is kept of
        older lists is dropped then, so the kept lists are those in use."""
        self._shape = shape
        self._encode = encode
        self._generation = generation
        self._kept_in = generation()
        # (id of the list, method, revision) -> (the list, kept alive so its id stays its own;
        # its shaped items)
        self._kept: dict[tuple[int, str, str], tuple[list[Any], Encoded]] = {}

    def __call__(self, method: str, version: str, result: Result) -> Result:
        key = LIST_KEYS.get(method)
        items = result.get(key) if key is not None else None
        if key is None or not isinstance(items, list) or len(items) < _WORTH_KEEPING:
            return self._shape(method, version, result)
        found = self._kept.get((id(items), method, version))
        if found is not None and found[0] is items:
            shaped = self._shape(method, version, {**result, key: []})
            shaped[key] = found[1]
            return shaped
        shaped = self._shape(method, version, result)
        encoded = Encoded(shaped[key], self._encode(shaped[key]))
        generation = self._generation()
        if generation != self._kept_in or len(self._kept) >= _KEPT:
            self._kept.clear()
            self._kept_in = generation
        self._kept[(id(items), method, version)] = (items, encoded)
        shaped[key] = encoded
        return shaped
