"""Micro-benchmark of the WAF engine alone: CPU µs per ``Waf.inspect`` (no HTTP, no ASGI)
for the three requests of issue 9: a GET with a 5-parameter query, a 2 KiB JSON POST and a
64 KiB form POST, at paranoia 1 and 2.

    .venv/bin/python bench/waf_engine.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.edge.waf import HttpRequest, Waf, WafConfig  # noqa: E402

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/130.0.0.0 Safari/537.36")
HEADERS = [("host", "api.example.com"), ("user-agent", UA),
           ("accept", "application/json, text/plain, */*"), ("accept-language", "en-US,en;q=0.9"),
           ("accept-encoding", "gzip, deflate, br"),
           ("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJl"),
           ("cookie", "session=5f7db05b3158edda06736049ea347b09; lang=en")]


def requests() -> dict[str, HttpRequest]:
    query = urlencode({"q": "cast iron skillet", "page": "2", "sort": "price_desc",
                       "category": "kitchen & dining", "in_stock": "true"})
    items = [{"sku": f"SKU-{i:05d}", "name": f"Chef's knife no. {i}", "qty": i % 5 + 1,
              "note": "Please gift-wrap it; it's for my dad's 60th birthday!"}
             for i in range(12)]
    doc = {"customer": {"name": "Siobhán O'Connor", "email": "siobhan@example.ie"},
           "items": items, "coupon": "WELCOME10"}
    body = json.dumps(doc).encode()[:2048]
    while len(body) < 2048:
        doc["items"].append(items[0])
        body = json.dumps(doc).encode()
    body = json.dumps({**doc, "items": doc["items"][:-1]}).encode()
    fields = {f"field_{i}": ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
                             "Sed do eiusmod tempor incididunt ut labore et dolore. ") * 4
              for i in range(140)}
    form = urlencode(fields).encode()[:65536]
    return {
        "GET 5-param query": HttpRequest("GET", "/api/v1/products?" + query, HEADERS),
        f"POST JSON {len(body)} B": HttpRequest(
            "POST", "/api/v1/orders", [*HEADERS, ("content-type", "application/json"),
                                       ("content-length", str(len(body)))], body),
        f"POST form {len(form)} B": HttpRequest(
            "POST", "/api/v1/forms", [*HEADERS, ("content-type",
                                                 "application/x-www-form-urlencoded"),
                                      ("content-length", str(len(form)))], form),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--cold", action="store_true", help="no cross-request cache of "
                    "tokenizer results (every value as if never seen before)")
    args = ap.parse_args()
    if args.cold:
        import bastion.edge.waf.engine as engine

        engine.CACHE_VALUE = -1
    for paranoia in (1, 2):
        waf = Waf(WafConfig(paranoia=paranoia))
        for name, req in requests().items():
            verdict = waf.inspect(req)
            assert not verdict.blocked, (name, verdict)
            rounds = max(20, args.rounds if "form" not in name else args.rounds // 20)
            start = time.process_time()
            for _ in range(rounds):
                waf.inspect(req)
            us = (time.process_time() - start) / rounds * 1e6
            print(f"PL{paranoia}  {name:<24} {us:8.0f} µs CPU per inspect")


if __name__ == "__main__":
    main()
