"""The edge: pure ASGI middleware that every request passes (request context, authorization,
and, as they land, load shedding, rate limits and the WAF)."""
