"""Proxied routes: what the ``routes`` setting holds, validated once at start.

    [[routes]]
    name = "inventory"
    path_prefix = "/api/inventory"
    upstream = "http://127.0.0.1:9000/v1"
    strip_prefix = true
    action = "inventory:GetItem"
    resource = "arn:bastion:inventory::{account}:item/{path}"

A route matches a request by path prefix (``/api`` covers ``/api`` and ``/api/x``, not
``/apix``), by host (the ``Host`` header, without its port, case-insensitive; ``*.example.com``
covers the names below ``example.com``), or by both. Every mistake is refused when the
settings load, with the route and the field named (``ConfigError``), never at the first
request.
"""

from __future__ import annotations

import re
import string
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.edge.ratelimit import Rule

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
ACTION_RE = re.compile(r"[A-Za-z0-9-]{1,64}:[A-Za-z0-9_.-]{1,128}")
HOST_RE = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}"
                     r"[a-z0-9])?)*")
# the names a resource ARN template may use: {account} and the request's {route}, {path}
# (the path below the prefix, without its leading slash) and {method}
TEMPLATE_FIELDS = frozenset({"account", "route", "path", "method"})
DEFAULT_RESOURCE = "arn:bastion:proxy::{account}:route/{route}/{path}"
PATH_CHARS = frozenset(string.ascii_letters + string.digits + "/-._~!$&'()*+,;=:@%")


class RouteLimit(BaseModel):
    """A rate limit of one route (``edge/ratelimit.Rule``): ``rate`` requests per ``period``
    seconds, per client IP (counted before authentication), per OAuth client id of HTTP
    Basic credentials (``key = "client"``), or per authenticated principal (``key =
    "principal"``, counted after authentication and before authorization; ``auth =
    "required"`` routes only). ``algorithm = "gcra"`` (the default) admits ``burst`` at
    once, then the steady rate; ``"sliding_window"`` admits at most ``rate`` in any
    ``period`` and takes no ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Named in the "
                      "RateLimit headers as <route>-<name> (at most 32 characters).")
    rate: int = Field(ge=1)
    period: int = Field(ge=1)
    burst: int | None = Field(None, ge=1, description="Required for gcra; not for "
                              "sliding_window.")
    methods: tuple[str, ...] = ()
    key: Literal["ip", "client", "principal"] = "ip"
    algorithm: Literal["gcra", "sliding_window"] = "gcra"

    @model_validator(mode="after")
    def _burst(self) -> RouteLimit:
        if self.algorithm == "gcra" and self.burst is None:
            raise ValueError(f"rate limit {self.name}: gcra needs a burst")
        if self.algorithm == "sliding_window" and self.burst not in (None, self.rate):
            raise ValueError(f"rate limit {self.name}: burst does not apply to a "
                             "sliding_window (up to rate at once); leave it unset")
        return self

    def rule(self, route: str) -> Rule:
        """The ``Rule`` counting this limit inside its route (every path of the route)."""
        return Rule(f"{route}-{self.name}", ("/",), self.rate, self.period, self.burst or 0,
                    methods=self.methods, key=self.key, algorithm=self.algorithm)


class RouteConfig(BaseModel):
    """One proxied route (``docs/edge.md``, "Reverse proxy")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique name: lower-case letters, digits, - and _ (in "
                      "metrics, audit records and rate limit names).")
    path_prefix: str | None = Field(None, description="Requests at or below this path.")
    host: str | None = Field(None, description="Requests for this host (or *.domain).")
    upstream: str = Field(description="http(s) URL of the upstream, optionally with a base "
                          "path; no user info, query or fragment.")
    strip_prefix: bool = Field(False, description="Remove path_prefix before appending the "
                               "request path to the upstream's base path.")
    auth: Literal["required", "none"] = Field("required", description="required: a valid "
                                              "Bastion bearer token and an IAM Allow of "
                                              "action; none: public (no principal passed).")
    action: str | None = Field(None, description="IAM action the route needs "
                               "(service:Action), required with auth = required.")
    resource: str = Field(DEFAULT_RESOURCE, description="Resource ARN template: {account}, "
                          "{route}, {path}, {method}.")
    scope: str | None = Field(None, description="An OAuth scope the token must also carry.")
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds to wait for the "
                           "upstream's response headers, and at most between two body reads.")
    connect_timeout: float = Field(5.0, gt=0, le=60, description="Seconds to connect.")
    max_body_bytes: int | None = Field(None, ge=0, description="Largest request body "
                                       "forwarded (413 beyond); default: no limit.")
    rate_limits: tuple[RouteLimit, ...] = Field((), description="Limits of this route.")
    waf_exclusions: tuple[str, ...] = Field((), description="WAF rule ids not applied on "
                                            "this route (read by the WAF).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError("route name: 1-32 of a-z 0-9 - _, starting with a letter or "
                             "digit")
        return v

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("/") or not all(c in PATH_CHARS for c in v) or "%" in v:
            raise ValueError("path_prefix must be an absolute path of URL characters, e.g. "
                             "/api/inventory (no percent-encoding)")
        if any(seg in (".", "..") for seg in v.split("/")) or "//" in v:
            raise ValueError("path_prefix must not hold empty, . or .. segments")
        return v if v == "/" else v.rstrip("/")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if len(v) > 253 or not HOST_RE.fullmatch(v):
            raise ValueError("host must be a DNS name (or *.domain), without port or scheme")
        return v

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        try:
            url = urlsplit(v)
            url.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            raise ValueError("upstream is not a valid URL") from None
        if url.scheme not in ("http", "https"):
            raise ValueError("upstream must be an http:// or https:// URL")
        if not url.hostname:
            raise ValueError("upstream must name a host")
        if url.username is not None or url.password is not None or "@" in url.netloc:
            raise ValueError("upstream must not carry user info (credentials in URLs leak "
                             "into logs)")
        if url.query or url.fragment or v.endswith(("?", "#")):
            raise ValueError("upstream must not have a query or fragment")
        if not all(c in PATH_CHARS for c in url.path) or any(
                seg in (".", "..") for seg in url.path.split("/")):
            raise ValueError("upstream path must be plain URL characters without . or .. "
                             "segments")
        return v.rstrip("/")

    @field_validator("action")
    @classmethod
    def _action(cls, v: str | None) -> str | None:
        if v is not None and not ACTION_RE.fullmatch(v):
            raise ValueError("action must be service:Action, e.g. inventory:GetItem (no "
                             "wildcards)")
        return v

    @field_validator("resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not v.startswith("arn:") or not v.isprintable():
            raise ValueError("resource must be an ARN template, e.g. "
                             "arn:bastion:inventory::{account}:item/{path}")
        try:
            names = {f for _, f, spec, conv in string.Formatter().parse(v) if f is not None}
            specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(v)
                     if f is not None and (spec or conv)]
        except ValueError:
            raise ValueError("resource: unbalanced { or } (write {{ and }} for braces)") \
                from None
        unknown = names - TEMPLATE_FIELDS
        if unknown or specs:
            raise ValueError(f"resource may use only {{account}}, {{route}}, {{path}} and "
                             f"{{method}}; found {sorted(unknown) or 'a format spec'}")
        return v

    @model_validator(mode="after")
    def _whole(self) -> RouteConfig:
        if self.path_prefix is None and self.host is None:
            raise ValueError(f"route {self.name}: give path_prefix, host or both")
        if self.auth == "required" and self.action is None:
            raise ValueError(f"route {self.name}: auth = required needs the IAM action the "
                             "route performs (action = \"service:Action\")")
        if self.auth == "none" and (self.action is not None or self.scope is not None):
            raise ValueError(f"route {self.name}: action and scope need auth = required")
        if self.strip_prefix and self.path_prefix is None:
            raise ValueError(f"route {self.name}: strip_prefix needs path_prefix")
        names = [limit.name for limit in self.rate_limits]
        if len(set(names)) != len(names):
            raise ValueError(f"route {self.name}: rate limit names must be unique")
        for limit in self.rate_limits:  # Rule's own checks (e.g. rate too high)
            limit.rule(self.name)
            if limit.key == "principal" and self.auth != "required":
                raise ValueError(f"route {self.name}: rate limit {limit.name} counts per "
                                 "principal, which needs auth = required")
        return self

    # --- matching -------------------------------------------------------------------
    def matches_host(self, host: str | None) -> bool:
        if self.host is None:
            return True
        if host is None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host

    def remainder(self, path: str) -> str | None:
        """The path below the prefix (``""`` or ``/…``), None when the path is outside."""
        prefix = self.path_prefix
        if prefix is None or prefix == "/":
            return path
        if path == prefix:
            return ""
        if path.startswith(prefix) and path[len(prefix)] == "/":
            return path[len(prefix):]
        return None


def check_routes(routes: tuple[RouteConfig, ...]) -> tuple[RouteConfig, ...]:
    """Names are unique (routes', and their limits' ``<route>-<name>``), and no two routes
    claim the same host and prefix."""
    seen: set[str] = set()
    claims: set[tuple[str | None, str | None]] = set()
    limits: set[str] = set()
    for route in routes:
        for limit in route.rate_limits:
            rule = limit.rule(route.name).name
            if rule in limits:
                raise ValueError(f"route {route.name}: the rate limit name {rule} is taken "
                                 "by another route")
            limits.add(rule)
        if route.name in seen:
            raise ValueError(f"route names must be unique: {route.name} appears twice")
        seen.add(route.name)
        claim = (route.host, route.path_prefix)
        if claim in claims:
            raise ValueError(f"route {route.name}: another route has the same host and "
                             "path_prefix")
        claims.add(claim)
    return routes
