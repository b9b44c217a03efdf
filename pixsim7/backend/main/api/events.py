"""The events WebSocket (`/api/v1/ws/events`): streams published events to connected clients.

Who may listen: a client presenting EVENTS_TOKEN (ADMIN_TOKEN when unset), as
`Authorization: Bearer <token>` or, from a browser, as the subprotocol `bearer.<token>` next to
`pixsim7.events`; a browser page must also come from one of CORS_ORIGINS.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from pixsim7.backend.main.shared.paths import EVENTS_PATH
from pixsim7.backend.main.state import state_of

__all__ = ["EVENTS_PATH", "EVENTS_SUBPROTOCOL", "router"]

EVENTS_SUBPROTOCOL = "pixsim7.events"
_BEARER_SUBPROTOCOL = "bearer."
# Close codes (RFC 6455 and IANA): policy violation, message too big, server cannot serve,
# try again later.
POLICY_VIOLATION, MESSAGE_TOO_BIG, UNAVAILABLE, TRY_AGAIN_LATER = 1008, 1009, 1011, 1013

logger = logging.getLogger(__name__)
router = APIRouter()


def _presented_token(websocket: WebSocket) -> str:
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(_BEARER_SUBPROTOCOL):
            return offered[len(_BEARER_SUBPROTOCOL):]
    return ""


def _refusal(websocket: WebSocket) -> str | None:
    """Why this client may not listen (for the log, never the client), or None."""
    state = state_of(websocket.app)
    expected = state.settings.events_token or state.admin_token
    if not expected:
        return "no EVENTS_TOKEN or ADMIN_TOKEN is set"
    origin = websocket.headers.get("origin")
    if origin is not None and origin not in state.settings.cors_origins:
        return f"origin {origin[:100]!r} is not in CORS_ORIGINS"
    presented = _presented_token(websocket).encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(presented, expected.encode("utf-8")):
        return "no valid token"
    return None


@router.websocket(EVENTS_PATH)
async def events_websocket(websocket: WebSocket) -> None:
    """Register an allowed client with the app's `ws_hub` until it disconnects."""
    state = state_of(websocket.app)
    hub = state.ws_hub
    if hub is None:
        await websocket.close(code=UNAVAILABLE, reason="event hub is not running")
        return
    if (reason := _refusal(websocket)) is not None:
        logger.info("event WebSocket refused: %s", reason)
        # Closing before accepting answers the handshake with 403.
        await websocket.close(code=POLICY_VIOLATION)
        return
    offered = websocket.scope.get("subprotocols", [])
    subprotocol = EVENTS_SUBPROTOCOL if EVENTS_SUBPROTOCOL in offered else None
    settings = state.settings
    if not hub.take_place(settings.ws_listener_limit()):
        # Accepted only to be closed with a reason a client can act on.
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(code=TRY_AGAIN_LATER, reason=(
            "too many event listeners (WS_MAX_CONNECTIONS); try again later"))
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        hub.register(websocket)
        await _listen(websocket, settings.ws_max_message_bytes)
    finally:
        hub.unregister(websocket)
        hub.give_back_place()


async def _listen(websocket: WebSocket, limit: int) -> None:
    """Until the client goes: clients only listen, so what they send is dropped, and reading
    notices a disconnect."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            # The server bounds messages too; this holds under any ASGI server.
            size = len(message.get("bytes") or b"") + len(message.get("text") or "")
            if size > limit:
                await websocket.close(code=MESSAGE_TOO_BIG)
                return
    except WebSocketDisconnect:
        pass
