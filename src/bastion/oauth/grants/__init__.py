"""Grant handlers walked by the token endpoint; each owns one ``grant_type``."""
