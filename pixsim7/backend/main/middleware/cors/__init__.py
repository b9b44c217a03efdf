"""Starlette's CORSMiddleware configured from `settings.cors_origins`."""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send


class OriginCORSMiddleware(CORSMiddleware):
    """Starlette's CORS; a request without `Origin` (probes, servers) only gets `Vary: Origin`.

    Starlette parses the request and response headers of every request; most carry no Origin.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A cache must not hand this answer to a request that has an Origin.
                message["headers"] = [*message.get("headers", ()), (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, send_with_vary)


def build(settings: Any) -> tuple[type, dict[str, Any]]:
    """CORSMiddleware allowing the configured origins; credentials only without a wildcard."""
    origins = getattr(settings, "cors_origins", None)
    if origins is None or isinstance(origins, str):
        raise ValueError(
            f"setting cors_origins must be a list of origins, got {origins!r}; "
            'set CORS_ORIGINS to a JSON list such as ["http://localhost:5173"]'
        )
    origins = [str(origin) for origin in origins]
    return OriginCORSMiddleware, {
        "allow_origins": origins,
        # A wildcard origin with credentials would let any site act with a user's cookies.
        "allow_credentials": "*" not in origins,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": ["X-Request-ID"],
    }
