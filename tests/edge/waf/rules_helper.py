"""Table helpers of the rule-family tests: a request with the payload in one place."""

from __future__ import annotations

import json
from urllib.parse import quote

from bastion.edge.waf import HttpRequest, Verdict, Waf, WafConfig

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/130.0.0.0 Safari/537.36")
BASE = [("host", "api.example.com"), ("user-agent", UA), ("accept", "*/*")]
WAFS: dict[int, Waf] = {}


def waf(paranoia: int = 1) -> Waf:
    if paranoia not in WAFS:
        WAFS[paranoia] = Waf(WafConfig(paranoia=paranoia))
    return WAFS[paranoia]


def request(payload: str, where: str = "query") -> HttpRequest:
    """``payload`` in a query parameter, a form field, a JSON value or key, a header, a
    cookie, or as the raw body."""
    if where == "query":
        return HttpRequest("GET", "/search?q=" + quote(payload, safe=""), BASE)
    if where == "form":
        return HttpRequest("POST", "/submit", [*BASE, ("content-type",
                                                        "application/x-www-form-urlencoded")],
                           b"comment=" + quote(payload, safe="").encode())
    if where == "json":
        body = json.dumps({"order": {"items": [{"note": payload}]}}).encode()
        return HttpRequest("POST", "/api", [*BASE, ("content-type", "application/json")], body)
    if where == "json-key":
        body = json.dumps({"filter": {payload: "x"}}).encode()
        return HttpRequest("POST", "/api", [*BASE, ("content-type", "application/json")], body)
    if where == "header":
        return HttpRequest("GET", "/", [*BASE, ("x-custom-data", payload)])
    if where == "cookie":
        return HttpRequest("GET", "/", [*BASE, ("cookie", "pref=" + quote(payload, safe=""))])
    if where == "body":
        return HttpRequest("POST", "/raw", [*BASE, ("content-type", "text/plain")],
                           payload.encode())
    raise ValueError(where)


def verdict(payload: str, where: str = "query", paranoia: int = 1) -> Verdict:
    return waf(paranoia).inspect(request(payload, where))


def families(v: Verdict) -> set[str]:
    return {m.family for m in v.matches}
