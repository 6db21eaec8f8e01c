"""`tests.plugins.noisy:Noisy`: a middleware that writes to the gateway's own stdout on every call.

Over `serve --stdio` that stdout is the wire; what a careless plugin (or library) prints there
must not reach the client (tests/test_stdio.py).
"""

from __future__ import annotations

import os
from typing import Any

from gateway.middleware import Call, CallNext, Result


class Noisy:
    def __init__(self, **options: Any) -> None:
        pass

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        print("noise from print()", flush=True)
        os.write(1, b"noise written to fd 1\n")
        return await call_next(call)
