"""The admin dashboard: static files served at `/admin/ui/`, no build step.

The page (`gateway/admin/ui/`) is plain HTML, CSS and JavaScript that talks to the admin API next
to it with the admin key the user types in; the files themselves hold nothing secret, so they are
served without authentication. Wiring (in `gateway.app.build_app`)::

    routes.extend(ui_routes())      # BEFORE the admin API's routes:
    routes.extend(admin.routes)     # its Mount("/admin") would otherwise answer /admin/ui with a 401

The package data (`gateway/admin/ui/*`) must be installed with the package.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).with_name("ui")

# The page loads only its own files and talks only to its own origin: an injected script or a
# framing page cannot run, and no key can be posted elsewhere by a form.
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    # Revalidate every time (ETag/Last-Modified make it cheap): an upgraded gateway serves new files.
    "cache-control": "no-cache",
}


class _Hardened:
    """Adds the headers above to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in _HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in self._headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *self._headers]}
            await send(message)

        await self.app(scope, receive, stamped)


def ui_routes(path: str = "/admin/ui") -> list[BaseRoute]:
    """The dashboard at `path + "/"`, and a redirect from `path` to it."""
    path = path.rstrip("/")
    # Relative, so that it also works behind a proxy that serves the gateway under a prefix.
    target = path.rsplit("/", 1)[-1] + "/"

    async def redirect(request: Request) -> Response:
        query = request.url.query
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)

    static = StaticFiles(directory=STATIC_DIR, html=True)
    return [
        Route(path, redirect, methods=["GET", "HEAD"]),
        Mount(path, app=_Hardened(static), name="admin-ui"),
    ]
