"""WebSocket endpoint that streams published events to connected clients."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .handlers import WebSocketHub

__all__ = ["EVENTS_PATH", "router"]

EVENTS_PATH = "/api/v1/ws/events"

router = APIRouter()


@router.websocket(EVENTS_PATH)
async def events_websocket(websocket: WebSocket) -> None:
    """Register the client with `app.state.ws_hub` until it disconnects."""
    hub: WebSocketHub | None = getattr(websocket.app.state, "ws_hub", None)
    if hub is None:
        # 1011: the server cannot serve this endpoint (event hub not started or disabled).
        await websocket.close(code=1011, reason="event hub is not running")
        return
    await websocket.accept()
    hub.register(websocket)
    try:
        # Clients only listen; reading is how a disconnect is noticed.
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except WebSocketDisconnect:
        pass
    finally:
        hub.unregister(websocket)
