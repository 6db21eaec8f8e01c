"""Which strings of an MCP message are masked, and putting the masked ones back without touching
the original: results may be shared (a cache, a list), so only what changed is copied.

Masked: text content, embedded resources' text, resource_link descriptions, every string leaf of
`structuredContent`, resource text contents, prompt descriptions and messages, log `data`, error
messages and data, tool and prompt arguments. Never: blobs (base64 `blob`, image/audio `data`),
keys, `_meta`, URIs, names.

A message is walked twice by the same code (`apply`): once with a `_Collect` that gathers the
strings in order, then, only if masking changed one, with a `_Rebuild` that puts the masked ones
back, copying just the containers on the way to a changed string and skipping the subtrees in
which nothing changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any, Protocol

from gateway.masking._engine import Masker

_SEP = "\n\x00\n"  # no pattern crosses a NUL; one that does (a PEM block) changes the part count


class _Walker(Protocol):
    def leaf(self, value: str) -> str: ...
    def tree(self, value: Any) -> Any: ...


class _Collect:
    def __init__(self) -> None:
        self.strings: list[str] = []
        # Per container, in the order visited: (strings inside it, containers inside it).
        self.sizes: list[tuple[int, int]] = []

    def leaf(self, value: str) -> str:
        self.strings.append(value)
        return value

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            self.strings.append(value)
        elif isinstance(value, dict | list):
            self._container(value)
        return value

    def _container(self, value: dict[str, Any] | list[Any]) -> None:
        slot = len(self.sizes)
        self.sizes.append((0, 0))
        strings, containers = len(self.strings), len(self.sizes)
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, str):
                self.strings.append(item)
            elif isinstance(item, dict | list):
                self._container(item)
        self.sizes[slot] = (len(self.strings) - strings, len(self.sizes) - containers)


class _Rebuild:
    def __init__(self, collected: _Collect, masked: list[str]) -> None:
        self.sizes = collected.sizes
        self.masked = masked
        self.changed = [
            i for i, (new, old) in enumerate(zip(masked, collected.strings, strict=True)) if new is not old
        ]
        self.string = 0  # index of the next string, in collection order
        self.container = 0

    def leaf(self, value: str) -> str:
        self.string += 1
        return self.masked[self.string - 1]

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.leaf(value)
        if not isinstance(value, dict | list):
            return value
        strings, containers = self.sizes[self.container]
        self.container += 1
        at = bisect.bisect_left(self.changed, self.string)
        if at == len(self.changed) or self.changed[at] >= self.string + strings:
            self.string += strings  # nothing changed in here: keep it, whole
            self.container += containers
            return value
        if isinstance(value, dict):
            copy = dict(value)
            for key, item in value.items():
                copy[key] = self.tree(item)
            return copy
        return [self.tree(item) for item in value]


def _field(obj: Any, key: str, fn: Callable[[Any], Any]) -> Any:
    """`obj` with `obj[key]` replaced by `fn(obj[key])`, copied only if that changed it."""
    if not isinstance(obj, dict) or key not in obj:
        return obj
    old = obj[key]
    new = fn(old)
    return obj if new is old else {**obj, key: new}


def _each(items: Any, fn: Callable[[Any], Any]) -> Any:
    if not isinstance(items, list):
        return items
    out: list[Any] | None = None
    for i, item in enumerate(items):
        new = fn(item)
        if new is not item:
            if out is None:
                out = list(items)
            out[i] = new
    return items if out is None else out


def _text(w: _Walker) -> Callable[[Any], Any]:
    return lambda v: w.leaf(v) if isinstance(v, str) else v


def content_block(block: Any, w: _Walker) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "text":
        return _field(block, "text", _text(w))
    if kind == "resource":
        return _field(block, "resource", lambda r: _field(r, "text", _text(w)))
    if kind == "resource_link":
        return _field(block, "description", _text(w))
    return block  # image, audio: binary, not scanned


def _content(value: Any, w: _Walker) -> Any:
    """A `content` field: a list of blocks, or one block (prompt messages)."""
    if isinstance(value, list):
        return _each(value, lambda b: content_block(b, w))
    return content_block(value, w)


def apply(method: str, message: Any, w: _Walker) -> Any:
    """Walk the maskable strings of a result (or of a log notification's params)."""
    if method == "tools/call":
        message = _field(message, "content", lambda c: _content(c, w))
        return _field(message, "structuredContent", w.tree)
    if method == "resources/read":
        return _field(message, "contents", lambda c: _each(c, lambda item: _field(item, "text", _text(w))))
    if method == "prompts/get":
        message = _field(message, "description", _text(w))
        return _field(
            message,
            "messages",
            lambda ms: _each(ms, lambda m: _field(m, "content", lambda c: _content(c, w))),
        )
    if method == "notifications/message":
        return _field(message, "data", w.tree)
    if method in ("tasks/get", "notifications/tasks"):
        # A task (and its status notification) inlines the result of the call that created it
        # (tasks extension: only `tools/call` makes tasks), or the error it ended with.
        message = _field(message, "result", lambda r: apply("tools/call", r, w))
        message = _field(message, "error", w.tree)
        return _field(message, "statusMessage", _text(w))
    return message


def mask_strings(masker: Masker, values: list[str], *, blocking: bool = True) -> list[str]:
    """Many strings in one pass (joined), so that a result with a thousand short leaves costs one
    scan, not a thousand. Unchanged strings come back as the same objects."""
    if len(values) == 1:
        return [masker.mask(values[0], blocking=blocking)]
    joined = _SEP.join(values)
    masked = masker.mask(joined, blocking=blocking)
    if masked is joined:
        return values
    parts = masked.split(_SEP)
    if len(parts) != len(values):  # a finding spanned two strings (or one held the separator)
        return [masker.mask(v, blocking=blocking) for v in values]
    return [v if new == v else new for new, v in zip(parts, values, strict=True)]


def _masked(masker: Masker, walk: Callable[[_Walker], Any], original: Any, blocking: bool) -> Any:
    collected = _Collect()
    walk(collected)
    if not collected.strings:
        return original
    masked = mask_strings(masker, collected.strings, blocking=blocking)
    if masked is collected.strings or all(n is o for n, o in zip(masked, collected.strings, strict=True)):
        return original
    return walk(_Rebuild(collected, masked))


def mask_message(masker: Masker, method: str, message: Any, *, blocking: bool = True) -> Any:
    """The masked copy of a result or notification params (the same object if nothing was
    found). Raises `Blocked`."""
    return _masked(masker, lambda w: apply(method, message, w), message, blocking)


def mask_tree(masker: Masker, value: Any, *, blocking: bool = True) -> Any:
    """Any JSON value with every string leaf masked (the same object if nothing was found)."""
    return _masked(masker, lambda w: w.tree(value), value, blocking)
