"""`plugins.deny_pattern:DenyPattern`: refuse tool calls whose arguments match a regex.

    middleware:
      - use: plugins.deny_pattern:DenyPattern
        options:
          patterns: ['AKIA[0-9A-Z]{16}', '(?i)drop\\s+table']
          tools: ['db__*']                    # globs on public tool names; default: every tool
          message: no credentials or DDL in tool arguments

Every string in the arguments is searched, however deeply nested in objects and lists. The
refusal names neither the pattern nor the matching text: both may be what the rule protects.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.errors import Denied
from gateway.middleware import Call, CallNext, Result, compile_globs

logger = logging.getLogger(__name__)


class DenyPatternOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patterns: list[str] = Field(min_length=1, description="regular expressions (Python syntax), searched")
    tools: list[str] = Field(["*"], min_length=1, description="globs on the public tool names to check")
    message: str = "request refused: the arguments match a denied pattern"
    ignore_case: bool = False

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return patterns


class DenyPattern:
    def __init__(self, **options: Any) -> None:
        self.options = opts = DenyPatternOptions(**options)
        flags = re.IGNORECASE if opts.ignore_case else 0
        self.patterns = [re.compile(p, flags) for p in opts.patterns]
        self.tools = compile_globs(opts.tools)

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.method == "tools/call" and self.tools.match(call.name or ""):
            index = self._matching(call.params.get("arguments"))
            if index is not None:
                logger.info("deny_pattern: refused a call to %s (pattern #%d)", call.name, index)
                raise Denied(self.options.message, data={"tool": call.name})
        return await call_next(call)

    def _matching(self, arguments: Any) -> int | None:
        """The index of the first pattern some string leaf matches."""
        stack = [arguments]
        while stack:  # iterative: a deeply nested argument cannot exhaust the Python stack
            value = stack.pop()
            if isinstance(value, str):
                for index, pattern in enumerate(self.patterns):
                    if pattern.search(value):
                        return index
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return None
