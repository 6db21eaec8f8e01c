"""Which strings of an MCP message are masked, and putting the masked ones back without touching
the original: results may be shared (a cache, a list), so only what changed is copied.

Masked: text content, embedded resources' text, resource_link descriptions, every string leaf of
`structuredContent`, resource text contents, prompt descriptions and messages, log `data`, error
messages and data, tool and prompt arguments. Never: blobs (base64 `blob`, image/audio `data`),
keys, `_meta`, URIs, names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.masking._engine import Masker

StrFn = Callable[[str], str]
_SEP = "\n\x00\n"  # no pattern crosses a NUL; one that does (a PEM block) changes the part count


def tree(value: Any, fn: StrFn) -> Any:
    """`value` (any JSON) with `fn` applied to every string leaf; copied only where changed."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        copy: dict[str, Any] | None = None
        for key, item in value.items():
            new = tree(item, fn)
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = new
        return value if copy is None else copy
    if isinstance(value, list):
        items: list[Any] | None = None
        for i, item in enumerate(value):
            new = tree(item, fn)
            if new is not item:
                if items is None:
                    items = list(value)
                items[i] = new
        return value if items is None else items
    return value


def _field(obj: Any, key: str, fn: Callable[[Any], Any]) -> Any:
    """`obj` with `obj[key]` replaced by `fn(obj[key])`, copied only if that changed it."""
    if not isinstance(obj, dict) or key not in obj:
        return obj
    old = obj[key]
    new = fn(old)
    return obj if new is old else {**obj, key: new}


def _text(fn: StrFn) -> Callable[[Any], Any]:
    return lambda v: fn(v) if isinstance(v, str) else v


def _each(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: tree_list(v, fn) if isinstance(v, list) else v


def tree_list(items: list[Any], fn: Callable[[Any], Any]) -> list[Any]:
    out: list[Any] | None = None
    for i, item in enumerate(items):
        new = fn(item)
        if new is not item:
            if out is None:
                out = list(items)
            out[i] = new
    return items if out is None else out


def content_block(block: Any, fn: StrFn) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "text":
        return _field(block, "text", _text(fn))
    if kind == "resource":
        return _field(block, "resource", lambda r: _field(r, "text", _text(fn)))
    if kind == "resource_link":
        return _field(block, "description", _text(fn))
    return block  # image, audio: binary, not scanned


def _content(value: Any, fn: StrFn) -> Any:
    """A `content` field: a list of blocks, or one block (prompt messages)."""
    if isinstance(value, list):
        return tree_list(value, lambda b: content_block(b, fn))
    return content_block(value, fn)


def apply(method: str, message: Any, fn: StrFn) -> Any:
    """`fn` on the maskable strings of a result (or of a log notification's params)."""
    if method == "tools/call":
        message = _field(message, "content", lambda c: _content(c, fn))
        return _field(message, "structuredContent", lambda s: tree(s, fn))
    if method == "resources/read":
        return _field(message, "contents", _each(lambda item: _field(item, "text", _text(fn))))
    if method == "prompts/get":
        message = _field(message, "description", _text(fn))
        return _field(message, "messages", _each(lambda m: _field(m, "content", lambda c: _content(c, fn))))
    if method == "notifications/message":
        return _field(message, "data", lambda d: tree(d, fn))
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


def mask_message(masker: Masker, method: str, message: dict[str, Any], *, blocking: bool = True) -> Any:
    """The masked copy of `message` (the same object if nothing was found). Raises `Blocked`."""
    return mask_with(masker, lambda fn: apply(method, message, fn), message, blocking=blocking)


def mask_with(masker: Masker, walk: Callable[[StrFn], Any], original: Any, *, blocking: bool = True) -> Any:
    """Run `walk` once to collect the strings, mask them together, run it again to put them back."""
    strings: list[str] = []

    def collect(s: str) -> str:
        strings.append(s)
        return s

    walk(collect)
    if not strings:
        return original
    masked = mask_strings(masker, strings, blocking=blocking)
    if all(new is old for new, old in zip(masked, strings, strict=True)):
        return original
    replacements = iter(masked)
    return walk(lambda s: next(replacements))
