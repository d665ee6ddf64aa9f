"""OpenID Connect on top of the OAuth server: discovery, userinfo, RP-initiated logout."""
