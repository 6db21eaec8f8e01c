"""Tool search mode: a large catalogue shown to a model as three meta-tools instead of the whole list.

Models choose worse past a few dozen tools, and some clients cap a catalogue at 128. With
`tool_search:` set, a client that would see more than `after` tools lists instead::

    gateway_search_tools   words -> the best-matching real tools (name, one line, score)
    gateway_describe_tool  a real tool's name -> its whole definition (inputSchema included)
    gateway_call_tool      a real tool's name and arguments -> that tool's result

plus the `pinned` tools. Results cite the real public names, which stay callable directly.

This module knows no relay and no identity: it works over whatever list of tools it is given
(`ToolSearch.view`), which is the list a caller may see (the relay runs a `tools/list` through
the middleware chain for the caller, so authorization filters it as any list), so a search never
finds a tool its caller may not use. An index is built once per distinct list (a catalogue change,
or another identity's filtered copy of it), not per search.

Ranking is BM25 (`bm25s`: sparse-matrix scoring, a query over 1,000 tools in well under a
millisecond; chosen over `rank-bm25`, whose pure-Python scoring is slower and which is no longer
released) over English-stemmed words (PyStemmer's Snowball stemmer) of each tool's name (split on
`_`, `-`, `.` and camelCase), title, description and argument names and descriptions.

How the relay serves them (`Relay.dispatch`): `gateway_call_tool` is unwrapped into the real
`tools/call` before routing, so auth, rate limits, audit and telemetry see the real tool, as for a
direct call. A search or a description reads the caller's `tools/list` through the chain (audited
and rate-limited as a list). `after` counts the tools the caller may see, so an identity allowed a
few tools gets them listed directly; the meta-tools answer whenever `tool_search:` is set.

A backend tool whose public name is one of the meta-tools' is shadowed by it while search is on
(and reachable through `gateway_call_tool`): the names are chosen so that this does not happen with
the default `<server>__` prefixes.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config.models import ToolSearchConfig
from gateway.errors import BadArguments, UnknownName

logger = logging.getLogger(__name__)

Item = dict[str, Any]

SEARCH = "gateway_search_tools"
DESCRIBE = "gateway_describe_tool"
CALL = "gateway_call_tool"
META_NAMES = frozenset({SEARCH, DESCRIBE, CALL})
MAX_LIMIT = 50
# Distinct lists indexed at once: one per catalogue version and per set of roles filtering it.
_VIEWS = 64
_SUMMARY = 160

# camelCase and acronym boundaries (`getHTTPStatus` -> get HTTP Status), and name separators.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-.:/]+")


def words(text: str) -> str:
    """`text` with identifiers split into words: `git__git_diff_unstaged` -> `git git diff unstaged`."""
    return _CAMEL.sub(" ", _SEPARATORS.sub(" ", text))


def document(tool: Mapping[str, Any]) -> str:
    """The text a tool is found by. Its name's words count three times: a name says what a tool
    does more densely than any description, and a model's query usually echoes it (measured:
    `python -m tests.bench --only search`; once or twice ranks worse)."""
    name = words(str(tool.get("name", "")))
    parts = [name, name, name, str(tool.get("title") or ""), str(tool.get("description") or "")]
    schema = tool.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if isinstance(properties, Mapping):
        for arg, spec in properties.items():
            parts.append(words(str(arg)))
            if isinstance(spec, Mapping) and isinstance(spec.get("description"), str):
                parts.append(spec["description"])
    return "\n".join(parts)


def summary(tool: Mapping[str, Any]) -> str:
    """One line of a tool's description (its first line, cut to a readable length)."""
    text = str(tool.get("description") or tool.get("title") or "").strip()
    line = text.split("\n", 1)[0].strip()
    return line if len(line) <= _SUMMARY else line[: _SUMMARY - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Hit:
    name: str
    description: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "score": self.score}


class ToolIndex:
    """BM25 over one list of tools; `search` ranks within it."""

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        # Imported with the first index: numpy and the rest cost a gateway without search mode
        # ~13 MB and 0.4 s of start-up.
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        # Its own: a Snowball stemmer is not to be shared between threads, and indexes are built in one.
        self._stemmer = Stemmer.Stemmer("english")
        self.names = [str(t.get("name", "")) for t in tools]
        self.summaries = [summary(t) for t in tools]
        self._retriever: Any = None
        if tools:
            self._retriever = bm25s.BM25()
            self._retriever.index(self._tokens([document(t) for t in tools]), show_progress=False)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        tokens: list[list[str]] = self._bm25s.tokenize(
            [words(t) for t in texts],
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return tokens

    def search(self, query: str, limit: int) -> list[Hit]:
        """The `limit` best tools for `query`, best first; only tools sharing a word with it."""
        import numpy as np  # loaded with bm25s: a look-up in sys.modules

        if self._retriever is None:
            return []
        ids = self._retriever.get_tokens_ids(self._tokens([query])[0])
        if not ids:
            return []
        scores = self._retriever.get_scores_from_ids(ids)
        count = min(limit, len(self.names))
        top = np.argpartition(-scores, count - 1)[:count]
        ranked = sorted(top.tolist(), key=lambda i: (-float(scores[i]), i))
        return [
            Hit(self.names[i], self.summaries[i], round(float(scores[i]), 3)) for i in ranked if scores[i] > 0
        ]


class View:
    """One list of tools as search mode shows it: what is listed, and the index over it."""

    def __init__(self, tools: list[Item], search: ToolSearch) -> None:
        self.tools = tools  # held, so that the ids in its cache key stay unique
        self._index: ToolIndex | None = None
        self.by_name: dict[str, Item] = {}
        for tool in tools:
            self.by_name.setdefault(str(tool.get("name")), tool)
        config = search.config
        self.condensed = config.after == 0 or len(tools) > config.after
        pinned = [t for t in tools if search.pinned(str(t.get("name")))]
        self.listed = [*search.meta_tools, *pinned] if self.condensed else tools

    @property
    def index(self) -> ToolIndex:
        if self._index is None:
            self._index = ToolIndex(self.tools)
        return self._index

    async def prepare(self) -> None:
        """Build the index in a worker thread (a 1,000-tool one takes ~150 ms, which would stall
        every other request on the event loop); two searches racing here build it twice, harmlessly."""
        if self._index is None:
            self._index = await anyio.to_thread.run_sync(ToolIndex, self.tools)


class _SearchArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=2000)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)


class _NameArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)


class _CallArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


_M = TypeVar("_M", bound=BaseModel)


def _parsed(model: type[_M], tool: str, arguments: Any) -> _M:
    try:
        return model.model_validate(arguments if arguments is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        raise BadArguments(f"Invalid arguments for {tool}: {problems}") from None


def _meta_tools(limit: int) -> list[Item]:
    return [
        {
            "name": SEARCH,
            "title": "Search tools",
            "description": "Find tools by what they do: a few words in, the best-matching tools out "
            "(name, one line, score). This list is a short one; many more tools are available. "
            f"Call a found tool by its name directly or through {CALL}; {DESCRIBE} gives its "
            "arguments.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What the tool should do, in words."},
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "description": f"How many tools to return (default {limit}).",
                    },
                },
                "required": ["query"],
            },
            "annotations": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
        },
        {
            "name": DESCRIBE,
            "title": "Describe a tool",
            "description": "A tool's whole definition, with the JSON Schema of its arguments.",
            "inputSchema": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "The tool's name."}},
                "required": ["name"],
            },
            "annotations": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
        },
        {
            "name": CALL,
            "title": "Call a tool",
            "description": "Call a tool by its name with its arguments; returns that tool's result.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The tool's name."},
                    "arguments": {"type": "object", "description": "The tool's arguments."},
                },
                "required": ["name"],
            },
        },
    ]


def _structured(value: Any) -> dict[str, Any]:
    """A tool result carrying `value` as structured content and (for older clients) as JSON text."""
    return {
        "content": [{"type": "text", "text": json.dumps(value, ensure_ascii=False)}],
        "structuredContent": value,
        "isError": False,
    }


class ToolSearch:
    """Search mode over one endpoint's tools, as configured by a `tool_search:` key."""

    def __init__(self, config: ToolSearchConfig) -> None:
        self.config = config
        self.meta_tools = _meta_tools(config.limit)
        self._views: collections.OrderedDict[tuple[int, ...], View] = collections.OrderedDict()
        self._last: View | None = None
        self._shadowed: set[str] = set()  # meta-tool names a backend's tool was found to have

    def pinned(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.config.pinned)

    def view(self, tools: list[Item]) -> View:
        """The view over `tools`, built once per distinct list.

        The same list object hits at once; a new list of the same items (a middleware that copies
        lists) hits by its items' identities, which the view keeps alive."""
        last = self._last
        if last is not None and last.tools is tools:
            return last
        key = tuple(map(id, tools))
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = View(tools, self)
            self._warn_shadowed(view)
            if len(self._views) > _VIEWS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(key)
        self._last = view
        return view

    def _warn_shadowed(self, view: View) -> None:
        for name in META_NAMES & view.by_name.keys() - self._shadowed:
            self._shadowed.add(name)
            logger.warning(
                "tool search: a backend's tool %r is shadowed by the gateway's meta-tool of that name; "
                "call it through %s (or give its server a `prefix:`)",
                name,
                CALL,
            )

    def listing(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """A `tools/list` result as search mode shows it (the meta-tools and the pinned tools past
        `after`); a new dict, its other keys (the cache hint) unchanged."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return dict(result)
        return {**result, "tools": self.view(tools).listed}

    def hits(self, tools: list[Item], arguments: Any) -> list[Hit]:
        """What a `gateway_search_tools` call with `arguments` finds among `tools`."""
        args = _parsed(_SearchArguments, SEARCH, arguments)
        return self.view(tools).index.search(args.query, args.limit or self.config.limit)

    @staticmethod
    def results(hits: Iterable[Hit]) -> dict[str, Any]:
        return _structured({"tools": [hit.as_dict() for hit in hits]})

    def describe(self, tools: list[Item], arguments: Any) -> dict[str, Any]:
        """A tool's whole definition; a tool not in `tools` reads as one that does not exist."""
        name = _parsed(_NameArguments, DESCRIBE, arguments).name
        tool = self.view(tools).by_name.get(name)
        if tool is None:
            raise UnknownName("tool", name)
        return _structured(tool)

    @staticmethod
    def unwrapped(params: Mapping[str, Any]) -> dict[str, Any]:
        """A `gateway_call_tool` request's params as the real `tools/call` they stand for (its
        `_meta` and any other keys kept: progress, tasks, input rounds)."""
        args = _parsed(_CallArguments, CALL, params.get("arguments"))
        return {**params, "name": args.name, "arguments": args.arguments}
