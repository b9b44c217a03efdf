"""The HTTP path prefixes, written once: the core API's, the admin API's, the events
WebSocket's, and where route and feature plugins mount."""

API_V1 = "/api/v1"
ADMIN_PREFIX = f"{API_V1}/admin"  # every path under it needs the admin token
EVENTS_PATH = f"{API_V1}/ws/events"
FEATURE_PLUGINS_PREFIX = f"{API_V1}/plugins"  # + /<plugin id>, unless its manifest says
