"""The middleware chain: every call and every backend notification passes through it."""

from gateway.middleware.base import ANONYMOUS, Call, CallNext, Identity, Middleware, Result
from gateway.middleware.chain import BUILTINS, build_chain, extras, instantiate, load
from gateway.middleware.globs import compile_globs

__all__ = [
    "ANONYMOUS",
    "BUILTINS",
    "Call",
    "CallNext",
    "Identity",
    "Middleware",
    "Result",
    "build_chain",
    "compile_globs",
    "extras",
    "instantiate",
    "load",
]
