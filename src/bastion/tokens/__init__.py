"""JWT access tokens: signing keys (issuer side) and verification (resource server side)."""
