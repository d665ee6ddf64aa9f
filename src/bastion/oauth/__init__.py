"""OAuth 2.0 authorization server, one module per RFC (RFC 6749, 6750, 7009, 7636, 7662,
8414, 9207, 9700)."""
