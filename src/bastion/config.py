"""Settings: one typed object, read from ``BASTION_*`` variables and an optional TOML file.

Every default lives here, each with its meaning. Precedence (highest first): explicit keyword
arguments (CLI flags), environment variables, the TOML file named by ``BASTION_CONFIG``,
then the defaults below. Unknown keys are an error.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bastion.edge.ratelimit import Rule
from bastion.edge.routes import RouteConfig, check_routes
from bastion.edge.waf.settings import ExclusionConfig as WafExclusion

SigningAlg = Literal["ES256", "RS256", "EdDSA"]
DATA_DIR_NAME = "bastion-data"


# Per client IP. Sign-in is a person typing (a sign-in takes 2-5 requests to /login and
# /login/mfa): 30 a minute, 10 at once, bounds password and TOTP guessing from one address
# well below what LoginThrottle's backoff allows, without hurting a user who mistypes. The
# browser flow (/authorize, /consent) is a few requests per sign-in: 300 a minute, 60 at once
# leaves room for many users behind one NAT. /token, /introspect, /revoke and /sts are
# machine clients and resource servers: 600 a minute (10/s), 120 at once, per address;
# introspection, called by resource servers per API request, gets twice that.
DEFAULT_RATE_LIMITS: tuple[Rule, ...] = (
    Rule("login", ("/login",), rate=30, period=60, burst=10, body="oauth"),
    Rule("authorize", ("/authorize", "/consent"), rate=300, period=60, burst=60, body="oauth"),
    Rule("token", ("/token",), rate=600, period=60, burst=120, body="oauth"),
    Rule("introspect", ("/introspect",), rate=1200, period=60, burst=240, body="oauth"),
    Rule("revoke", ("/revoke",), rate=600, period=60, burst=120, body="oauth"),
    Rule("sts", ("/sts",), rate=600, period=60, burst=120, body="aws"),
)


class ConfigError(Exception):
    """Settings could not be loaded; the message is meant for the operator."""


class Settings(BaseSettings):
    """Bastion's settings. Field docs are the reference (``docs/configuration.md``)."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_", extra="forbid", validate_default=True, frozen=True
    )

    # --- where state lives -------------------------------------------------------------
    data_dir: Path = Field(Path(DATA_DIR_NAME), description="Directory for the SQLite "
                           "database and the key-encryption key file (created 0700). Default: "
                           "the nearest bastion-data directory holding state, from the working "
                           "directory up; else ./bastion-data. Always made absolute.")
    database_url: str | None = Field(None, description="SQLAlchemy async URL, e.g. "
                                     "postgresql+asyncpg://user@host/db. Default: SQLite "
                                     "file bastion.db in data_dir.")
    redis_url: str | None = Field(None, description="Redis URL for short-lived shared state "
                                  "(throttling, pending requests, denylist). Default: memory.")

    # --- serving -----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8443, ge=0, le=65535, description="Port to listen on.")
    issuer: str | None = Field(None, description="Issuer URL (iss). Default: the address "
                               "served, https://host:port (http:// with dev).")
    dev: bool = Field(False, description="Allow plain HTTP, on loopback addresses only.")
    workers: int | None = Field(None, ge=0, le=64, description="Processes bastion serve "
                                "runs on one listening socket; 0 or unset: one per core "
                                "(unset with dev: 1). Without redis_url they share "
                                "short-lived state and rate limits through files in "
                                "data_dir/run; /metrics labels each series with its worker.")
    tls_cert: Path | None = Field(None, description="PEM certificate chain for HTTPS, "
                                  "reloaded when the file changes. Without it (and without "
                                  "dev) Bastion serves a certificate from its internal CA.")
    tls_key: Path | None = Field(None, description="PEM private key for HTTPS.")
    # TLS (edge/tls.py; docs/tls.md)
    tls_hostnames: str = Field("localhost,127.0.0.1,::1", description="Without tls_cert "
                               "(and without dev): the DNS names and IP addresses, comma "
                               "separated, of the server certificate Bastion gets from its "
                               "internal CA (data_dir/tls, renewed at two thirds of its "
                               "life). The issuer's host is added.")
    tls_reload_interval: float = Field(5.0, ge=0, le=3600, description="Seconds between "
                                       "checks of tls_cert/tls_key for new files (reloaded "
                                       "without a restart; SIGHUP checks at once). 0: only "
                                       "on SIGHUP.")
    tls_expiry_warning_days: float = Field(14.0, ge=0, description="Log a warning (daily) "
                                           "while tls_cert expires within this many days. "
                                           "0: never.")
    mtls: Literal["off", "optional", "required"] = Field(
        "off", description="Client certificates (mutual TLS): off (not asked for), optional "
        "(verified when sent) or required (the handshake fails without a valid one). A "
        "verified certificate is checked for revocation per request (401) and its SPIFFE "
        "ID is IAM's bastion:MtlsSpiffeId.")
    mtls_trust_bundle: Path | None = Field(None, description="PEM file of the CAs client "
                                           "certificates must chain to. Default: the "
                                           "internal CA's roots.")
    mtls_revocation_cache_ttl: float = Field(2.0, ge=0, le=60, description="Seconds a "
                                             "client certificate's revocation status is "
                                             "cached per server process.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body "
                                "accepted by the identity provider endpoints (413 beyond).")

    # --- rate limits (docs/edge.md) ------------------------------------------------------
    rate_limits: bool = Field(True, description="Apply rate_limit_rules to every request "
                              "(429 with Retry-After and RateLimit headers beyond them).")
    rate_limit_rules: tuple[Rule, ...] = Field(
        DEFAULT_RATE_LIMITS, description="The limits, a JSON list in the environment or an "
        "array of tables in TOML: name, paths (a path covers the paths below it), rate "
        "requests per period seconds, burst, optional methods, key ip (the connection's "
        "peer address) or client (the client id of HTTP Basic credentials, in addition to "
        "an ip rule), body oauth, problem or aws (the 429's shape), algorithm gcra (burst at "
        "once, then the rate; the default) or sliding_window (at most rate in any period; no "
        "burst). Shared through Redis when redis_url is set.")
    rate_limit_fail_mode: Literal["fail_open", "fail_closed"] = Field(
        "fail_open", description="When Redis cannot be reached: fail_open limits each "
        "instance on its own until Redis is back (retried every few seconds); fail_closed "
        "answers 503 on limited routes meanwhile.")

    # --- flood protection and client IP (docs/edge.md) ---------------------------------
    trusted_proxies: tuple[str, ...] = Field((), description="Addresses or CIDR blocks of "
                                             "the reverse proxies in front of Bastion. Only "
                                             "from them is trusted_proxy_header read: the "
                                             "client IP is its right-most address that is "
                                             "not a trusted proxy. Empty: the peer address.")
    trusted_proxy_header: Literal["x-forwarded-for", "forwarded"] = Field(
        "x-forwarded-for", description="The one header the trusted proxies append to: "
        "X-Forwarded-For or Forwarded (RFC 7239). The other is ignored.")
    header_timeout: float = Field(10.0, gt=0, le=3600, description="Seconds a client has "
                                  "to send a request line and headers (from the connection "
                                  "or the first byte of a further request); 408 and close.")
    body_timeout: float = Field(20.0, gt=0, le=3600, description="Longest pause while a "
                                "body is received, and the grace period before "
                                "body_min_rate applies; also how long a response may go "
                                "unread. 408 and close.")
    body_min_rate: int = Field(500, ge=1, description="Least average body upload rate, "
                               "bytes per second, after body_timeout (slow-body attacks).")
    keepalive_timeout: float = Field(5.0, gt=0, le=3600, description="Seconds an idle "
                                     "kept-alive connection waits for its next request.")
    max_header_count: int = Field(100, ge=1, description="Most header fields in a request "
                                  "(431 beyond).")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Largest header section, "
                                  "bytes (431 beyond).")
    max_url_bytes: int = Field(8 * 1024, ge=256, description="Longest request target, bytes "
                               "(414 beyond).")
    max_request_body_bytes: int = Field(1024 ** 3, ge=1024, description="Largest request "
                                        "body the server reads at all (413 before reading "
                                        "when Content-Length declares more, close when a "
                                        "chunked body passes it): a backstop for proxied "
                                        "uploads; Bastion's own endpoints apply "
                                        "max_body_bytes, proxied routes their own limit.")
    max_connections_per_ip: int = Field(100, ge=1, description="Concurrent connections per "
                                        "client address (peer; trusted proxies exempt); "
                                        "beyond, 503 and close. Per server process.")
    max_connections: int = Field(4096, ge=1, description="Concurrent connections in total "
                                 "per server process; beyond, 503 and close.")
    max_in_flight: int = Field(256, ge=1, description="Requests served at once per process; "
                               "further ones wait in the queue.")
    queue_size: int = Field(256, ge=0, description="Requests that may wait for a slot; "
                            "beyond, 503 with Retry-After at once.")
    queue_timeout: float = Field(1.0, ge=0, le=60, description="Seconds a queued request "
                                 "waits for a slot before 503 with Retry-After.")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from bastion.edge.clientip import parse_networks

        parse_networks(v)  # ValueError names the bad entry
        return v

    # --- under attack mode (edge/challenge.py; docs/edge.md) ----------------------------
    under_attack: Literal["off", "on", "auto"] = Field(
        "auto", description="Proof-of-work challenge for browsers before anything behind "
        "the edge: on, off, or auto (on after sustained overload, off after a calm period). "
        "Requests with credentials and under_attack_exempt_paths pass unchallenged.")
    under_attack_difficulty: int = Field(16, ge=1, le=32, description="Leading zero bits "
                                         "the SHA-256 of challenge and nonce must have "
                                         "(16: about 65,000 hashes, a second or so).")
    under_attack_cookie_ttl: int = Field(3600, ge=60, le=7 * 86400, description="Seconds a "
                                         "solved challenge's cookie is valid (bound to the "
                                         "client IP).")
    under_attack_challenge_ttl: int = Field(300, ge=10, le=3600, description="Seconds a "
                                            "browser has to solve a challenge.")
    under_attack_trigger_rate: float = Field(50.0, gt=0, description="auto: overload "
                                             "refusals per second (load shedding, connection "
                                             "caps) that count as an attack.")
    under_attack_trigger_seconds: float = Field(10.0, gt=0, le=3600, description="auto: "
                                                "seconds the trigger rate must last before "
                                                "the mode turns on.")
    under_attack_calm_seconds: float = Field(300.0, gt=0, le=86400, description="auto: "
                                             "seconds below the trigger rate before the "
                                             "mode turns off.")
    under_attack_exempt_paths: tuple[str, ...] = Field(
        ("/healthz", "/token", "/revoke", "/introspect", "/jwks.json", "/.well-known"),
        description="Paths (and the paths below them) never challenged: machine endpoints "
        "whose client authentication is in the body. Still rate limited.")

    # --- WAF (edge/waf; docs/waf.md) ---------------------------------------------------
    waf_mode: Literal["block", "detect", "off"] = Field(
        "block", description="block: refuse (403) requests whose anomaly score reaches "
        "waf_inbound_threshold and requests that cannot be inspected (4xx); detect: audit "
        "and log them (WafMatch) but let them pass; off: no inspection.")
    waf_paranoia: int = Field(1, ge=1, le=4, description="Paranoia level 1-4: higher "
                              "levels add stricter rules (more detection, more false "
                              "positives).")
    waf_inbound_threshold: int = Field(5, ge=1, description="Anomaly score at which a "
                                       "request is refused (critical 5, error 4, warning "
                                       "3, notice 2 per matched rule).")
    waf_body_limit: int = Field(128 * 1024, ge=1024, le=64 * 1024 ** 2, description="Largest "
                                "request body inspected, bytes (after decompression); a "
                                "larger body is refused with 413 unless its path is in "
                                "waf_body_unlimited_paths.")
    waf_body_unlimited_paths: tuple[str, ...] = Field(
        (), description="Paths (and the paths below them) whose bodies past waf_body_limit "
        "stream through uninspected (the request line and headers still are).")
    waf_exclusions: tuple[WafExclusion, ...] = Field(
        (), description="Rules not applied on some paths, a JSON list in the environment "
        "or an array of tables in TOML: paths, rule_ids and/or families, targets "
        "(ARGS:name, JSON:a.b, JSON:policy.*; empty: the whole request). Proxied routes' "
        "waf_exclusions add to these.")
    waf_fail_open: bool = Field(False, description="Pass requests when the WAF engine "
                                "fails (default: refuse with 503); logged and audited "
                                "either way.")
    waf_cache_dir: Path | None = Field(None, description="Directory of compiled rule "
                                       "databases reused by later processes (created 0700; "
                                       "each file authenticated with the key in "
                                       "data_dir/waf-cache.key). Default: data_dir/cache/waf.")

    # --- WAF: OWASP Core Rule Set (edge/waf/crs; docs/waf.md "OWASP CRS") -------------
    waf_crs_dir: Path | None = Field(None, description="A CRS directory (Debian's "
                                     "/usr/share/modsecurity-crs, or a CRS v4 checkout) "
                                     "whose crs-setup.conf and rules/*.conf are loaded; "
                                     "none: Bastion's own pack only.")
    waf_rulesets: Literal["crs", "both"] = Field(
        "both", description="With waf_crs_dir: crs runs the CRS alone, both runs it and "
        "Bastion's pack (a request is refused when either refuses it).")

    # --- tokens ------------------------------------------------------------------------
    signing_alg: SigningAlg = Field("ES256", description="Algorithm of new signing keys.")
    access_token_ttl: int = Field(900, ge=30, le=86400, description="Access token lifetime, "
                                  "seconds.")
    id_token_ttl: int = Field(3600, ge=30, le=86400, description="ID token lifetime, seconds.")
    refresh_token_ttl: int = Field(30 * 86400, ge=60, description="Refresh token family "
                                   "absolute lifetime, seconds.")
    refresh_grace_seconds: int = Field(10, ge=0, le=300, description="A rotated refresh token "
                                       "presented again by the same client within this window "
                                       "gets fresh tokens instead of revoking the family "
                                       "(concurrent refreshes).")
    code_ttl: int = Field(60, ge=10, le=600, description="Authorization code lifetime, seconds "
                          "(RFC 9700 recommends short; capped at 600).")
    key_refresh_interval: float = Field(2.0, gt=0, le=60, description="How often a running "
                                        "server re-reads signing keys (sees CLI rotations).")
    client_cache_ttl: float = Field(2.0, ge=0, le=60, description="Seconds a client record "
                                    "is cached in memory by the token endpoint.")

    # --- sessions and login ------------------------------------------------------------
    session_ttl: int = Field(8 * 3600, ge=60, description="Login session lifetime, seconds.")
    pending_request_ttl: int = Field(600, ge=60, le=3600, description="How long a user has to "
                                     "log in and consent, seconds.")
    login_max_failures_account: int = Field(5, ge=1, description="Failures per account before "
                                            "backoff starts.")
    login_max_failures_ip: int = Field(20, ge=1, description="Failures per client IP before "
                                       "backoff starts.")
    login_backoff_base: float = Field(1.0, gt=0, description="First backoff, seconds; doubles "
                                      "with each further failure.")
    login_backoff_max: float = Field(900.0, gt=0, description="Longest backoff, seconds.")
    login_failure_window: int = Field(900, ge=60, description="Seconds failures are counted.")

    # --- IAM ---------------------------------------------------------------------------
    account_id: str = Field("000000000000", pattern=r"^[0-9]{12}$", description="The account "
                            "id in every ARN (arn:bastion:iam::<account>:user/alice).")
    iam_cache_ttl: float = Field(2.0, ge=0, le=60, description="Seconds a principal's "
                                 "compiled policies are reused before the generation counter "
                                 "is checked again (changes made by this process apply at "
                                 "once; other instances see them within this time).")

    # --- audit trail -------------------------------------------------------------------
    audit_failure_mode: Literal["fail_closed", "spool"] = Field(
        "fail_closed", description="When the trail cannot be written: fail_closed answers "
        "503 to the request whose event could not be recorded; spool appends the event to "
        "an fsynced file in data_dir/audit-spool and moves it into the trail, in order, "
        "once the database is back. Never silently dropped.")
    audit_checkpoint_every: int = Field(10_000, ge=1, description="Sign a Merkle checkpoint "
                                        "after this many new records...")
    audit_checkpoint_interval: float = Field(60.0, gt=0, description="...or after this many "
                                             "seconds with new records, whichever is first.")
    audit_sinks: str = Field("", description="Stream the trail out, comma separated: "
                             "stdout, syslog, syslog:HOST:PORT, or an https:// webhook (POST "
                             "of a JSON array per batch). Sinks follow the trail and retry; "
                             "their position survives restarts.")
    audit_sink_format: Literal["records", "ocsf"] = Field("records", description="What "
                                                          "sinks send: the records or OCSF "
                                                          "events.")
    audit_batch_max: int = Field(5_000, ge=1, le=100_000, description="Most records written "
                                 "in one group commit.")
    audit_sink_secret: SecretStr | None = Field(None, description="Key for the "
                                                "X-Bastion-Signature HMAC-SHA256 on every "
                                                "webhook body (docs/audit.md); required with "
                                                "a webhook sink.")
    audit_sink_allow_http_loopback: bool = Field(False, description="Allow a plain http:// "
                                                 "webhook to a loopback address (tests and "
                                                 "development only); otherwise https only.")

    # --- housekeeping ------------------------------------------------------------------
    purge_interval: float = Field(60.0, gt=0, description="Seconds between purges of "
                                  "expired codes, tokens and sessions.")
    admin_password: SecretStr | None = Field(None, description="Initial admin password; "
                                             "generated and printed once when unset.")

    # --- KMS: key hierarchy (kms/root.py) ------------------------------------------------
    root_keeper: Literal["file", "pkcs11"] = Field(
        "file", description="Where the KMS root key lives: file (data_dir/kek.key, or a "
        "passphrase-sealed data_dir/kms-root.sealed when root_passphrase is set) or pkcs11 "
        "(an AES-256 key generated inside an HSM token, never extractable).")
    root_passphrase: SecretStr | None = Field(None, description="file keeper: seal the root "
                                              "key with this passphrase (scrypt).")
    pkcs11_module: Path = Field(Path("/usr/lib/softhsm/libsofthsm2.so"), description="pkcs11 "
                                "keeper: the PKCS#11 module (shared library) of the HSM.")
    pkcs11_token_label: str = Field("bastion", min_length=1, max_length=32,
                                    description="pkcs11 keeper: label of the token.")
    pkcs11_pin: SecretStr | None = Field(None, description="pkcs11 keeper: the user PIN.")
    pkcs11_pin_file: Path | None = Field(None, description="pkcs11 keeper: a file holding "
                                         "the user PIN (instead of pkcs11_pin).")
    pkcs11_key_label: str = Field("bastion-kms-root", min_length=1, max_length=64,
                                  description="pkcs11 keeper: label of the root key object "
                                  "(generated in the token on first use).")
    kms_region: str = Field("", pattern=r"^[a-z0-9-]{0,32}$", description="Region component "
                            "of KMS ARNs (empty, like Bastion's other ARNs; set e.g. "
                            "us-east-1 for SDKs that parse key ARNs).")
    kms_cache_ttl: float = Field(1.0, ge=0, le=60, description="Seconds key metadata is "
                                 "cached per instance (changes made by this process apply "
                                 "at once; others' within this time).")
    kms_material_cache_size: int = Field(10_000, ge=1, description="Most unwrapped key "
                                         "versions kept in memory (the HSM stays off the hot "
                                         "path).")
    kms_material_cache_ttl: float = Field(300.0, gt=0, le=86400, description="Seconds an "
                                          "unwrapped key version stays in memory.")

    # --- AWS wire API: access keys and SigV4 (edge/sigv4.py, kms/api.py; docs/kms-api.md) --
    sigv4_max_skew: float = Field(300.0, ge=1, le=3600, description="Seconds a SigV4 "
                                  "request's X-Amz-Date may differ from the server's clock "
                                  "(AWS's JSON services: 5 minutes); signatures are "
                                  "remembered this long for replay protection.")
    sigv4_replay_protection: bool = Field(True, description="Accept each SigV4 signature "
                                          "once (two identical requests signed in the same "
                                          "second are one replayed).")
    access_key_cache_ttl: float = Field(2.0, ge=0, le=60, description="Seconds an access "
                                        "key (and its owner's roles) is cached per instance: "
                                        "a deactivation made elsewhere applies within this "
                                        "time.")
    kms_api_max_body: int = Field(131_072, ge=4096, le=16_777_216, description="Largest "
                                  "request body the AWS KMS wire API reads, in bytes.")

    # --- Orders: sealed fields' data keys (orders/sealing.py, kms/envelope.py; docs/kms.md) --
    orders_data_key_max_age: float = Field(300.0, gt=0, le=86400, description="Seconds a "
                                           "cached data key of the Orders' sealed fields is "
                                           "reused (sealing and opening) before the KMS is "
                                           "asked again.")
    orders_data_key_max_messages: int = Field(10_000, ge=1, le=2**32, description="Most "
                                              "values sealed (or opened) with one cached "
                                              "data key.")
    orders_data_key_max_bytes: int = Field(16 * 2**20, ge=1, le=2**63 - 1, description="Most "
                                           "bytes sealed (or opened) with one cached data "
                                           "key; a larger value gets a data key of its own.")
    orders_data_key_cache_size: int = Field(1000, ge=1, le=1_000_000, description="Most data "
                                            "keys cached for sealing, and as many for "
                                            "opening (least recently used dropped first).")

    # --- internal CA (pki/; docs/pki.md) --------------------------------------------------
    pki_trust_domain: str = Field("bastion.internal", pattern=r"^[a-z0-9]([a-z0-9.-]{0,253}"
                                  r"[a-z0-9])?$", description="SPIFFE trust domain of "
                                  "workload identities (spiffe://<trust domain>/...).")
    pki_server_ttl: int = Field(30 * 86400, ge=300, le=398 * 86400, description="Default "
                                "lifetime of server certificates, seconds.")
    pki_workload_ttl: int = Field(86400, ge=300, le=30 * 86400, description="Default "
                                  "lifetime of client and workload certificates, seconds.")
    pki_intermediate_days: int = Field(365, ge=7, le=3650, description="Lifetime of an "
                                       "online intermediate CA, days.")
    pki_root_days: int = Field(3650, ge=30, le=36500, description="Lifetime of the root CA "
                               "created on first start, days.")
    pki_permitted_dns: str = Field(
        "localhost,.localhost,.test,.internal,.local,.home.arpa", description="Name "
        "constraints of the intermediate: DNS names it may certify (a leading dot: any name "
        "below). The issuer's host name is added.")
    pki_permitted_ips: str = Field(
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        description="Name constraints of the intermediate: IP ranges it may certify.")
    demo_inventory_port: int = Field(8444, ge=0, le=65535, description="With serve --demo: "
                                     "the port of the example inventory service (mutual "
                                     "TLS with workload certificates; the Orders API checks "
                                     "stock there when an order is created). 0: off.")

    # --- ACME server on the internal CA (acme/; docs/acme.md) -------------------------------
    acme: bool = Field(True, description="Serve ACME (RFC 8555) at /acme/directory, issuing "
                       "from the internal CA.")
    acme_allowed_identifiers: str = Field(
        "localhost,*.localhost,*.test", description="Comma-separated names (IAM wildcards "
        "* and ?) that accounts without their own policy may order; anything else is "
        "rejectedIdentifier. Empty: only accounts with a policy (EAB keys) may order.")
    acme_http01_port: int = Field(80, ge=1, le=65535, description="Port http-01 "
                                  "challenges are fetched from (RFC 8555: 80).")
    acme_tls_alpn01_port: int = Field(443, ge=1, le=65535, description="Port tls-alpn-01 "
                                      "challenges connect to (RFC 8737: 443).")
    acme_resolve: str = Field("", description="Static name-to-address map used by "
                              "challenge validation before DNS, e.g. "
                              "'app.test=127.0.0.1,api.test=::1'.")
    acme_dns_resolver: str = Field("", description="DNS server (an IP address, with "
                                   ":port if not 53; IPv6 in brackets) that dns-01 TXT "
                                   "lookups ask; empty: the system resolver.")
    acme_validation_timeout: float = Field(10.0, gt=0, le=60, description="Seconds one "
                                           "challenge validation may take.")
    acme_eab_required: bool = Field(False, description="Require an external account "
                                    "binding (keys from 'bastion acme eab create') on "
                                    "newAccount.")
    acme_terms_of_service: str | None = Field(None, description="URL of the terms of "
                                              "service shown in the ACME directory.")
    acme_order_ttl: int = Field(86400, ge=60, le=30 * 86400, description="Seconds a "
                                "pending order and its authorizations live.")
    acme_certificate_ttl: int | None = Field(None, ge=300, description="Lifetime of "
                                             "ACME certificates, seconds; default: the "
                                             "CA's server profile.")

    @field_validator("acme_resolve")
    @classmethod
    def _acme_resolve(cls, v: str) -> str:
        from bastion.acme.validate import parse_resolve

        parse_resolve(v)  # ValueError names the bad entry
        return v

    @field_validator("acme_dns_resolver")
    @classmethod
    def _acme_dns_resolver(cls, v: str) -> str:
        from bastion.acme.validate import parse_nameserver

        if v:
            parse_nameserver(v)
        return v

    # --- reverse proxy and metrics (edge/proxy.py, edge/metrics.py; docs/edge.md) --------
    routes: tuple[RouteConfig, ...] = Field(
        (), description="Proxied routes, an array of tables in TOML: name, path_prefix "
        "and/or host, upstream (http(s) URL), strip_prefix, auth (required|none), action "
        "(the IAM action, service:Action), resource (ARN template with {account}, {route}, "
        "{path}, {method}), scope, timeout, connect_timeout, max_body_bytes, rate_limits "
        "(name, rate, period, burst, methods, key), waf_exclusions. Bastion's own "
        "endpoints take precedence over a route claiming the same path.")
    metrics: bool = Field(True, description="Serve GET /metrics (Prometheus text format), "
                          "to bearer tokens with the bastion:admin scope that IAM allows "
                          "bastion:GetMetrics.")

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: tuple[RouteConfig, ...]) -> tuple[RouteConfig, ...]:
        return check_routes(v)

    @model_validator(mode="after")
    def _sinks(self) -> Settings:
        from bastion.audit.sinks import check_sink_settings

        check_sink_settings(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("BASTION_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @field_validator("issuer")
    @classmethod
    def _issuer_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("https://", "http://")) or "?" in v or "#" in v:
            # RFC 8414 §2: https URL with no query or fragment
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _tls_rules(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.mtls != "off" and not self.https:
            raise ValueError("mtls needs TLS (not dev without tls_cert)")
        return self

    # --- derived -----------------------------------------------------------------------
    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def https(self) -> bool:
        """Served over TLS: files given, or (without dev) the internal CA's certificate."""
        return self.tls_cert is not None or not self.dev

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'bastion.db'}"

    @property
    def effective_issuer(self) -> str:
        if self.issuer:
            return self.issuer
        scheme = "https" if self.https else "http"
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def max_jwt_ttl(self) -> int:
        """Longest lifetime of anything a signing key signs (retired keys stay this long)."""
        return max(self.access_token_ttl, self.id_token_ttl)


def find_data_dir(start: Path) -> Path | None:
    """The nearest ``bastion-data`` directory holding state (its key file), looking in
    ``start`` and then each parent, the way git finds ``.git``."""
    from bastion.kms.keyfile import KEK_FILE

    for directory in (start, *start.parents):
        candidate = directory / DATA_DIR_NAME
        if (candidate / KEK_FILE).is_file():
            return candidate
    return None


def _absolute_data_dir(settings: Settings) -> Settings:
    """One data dir whatever the working directory: a given one made absolute; by default
    the nearest existing one (``find_data_dir``), else ``./bastion-data``."""
    if "data_dir" in settings.model_fields_set:
        data_dir = settings.data_dir.expanduser().resolve()
    else:
        cwd = Path.cwd().resolve()
        data_dir = find_data_dir(cwd) or cwd / DATA_DIR_NAME
    return settings.model_copy(update={"data_dir": data_dir})


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one readable ``ConfigError``."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    path = os.environ.get("BASTION_CONFIG")
    if path and not Path(path).is_file():
        raise ConfigError(f"BASTION_CONFIG: no such file: {path}")
    try:
        return _absolute_data_dir(Settings(**clean))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read BASTION_CONFIG: {exc}") from None
