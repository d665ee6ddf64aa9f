"""Users, groups, OAuth clients, passwords, login throttling and TOTP."""
