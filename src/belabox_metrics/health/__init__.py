"""Health: pure status rules, and the HTTP endpoints that serve them with /metrics."""
