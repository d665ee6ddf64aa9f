"""Runs corpus records through the ModSecurity v3 oracle and Bastion's CRS mode side by
side (tests/edge/waf/test_crs.py)."""

from __future__ import annotations

import base64
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.edge.waf.crs import CrsWaf
from bastion.edge.waf.decode import HttpRequest

CORPUS = Path(__file__).parent / "corpus"
ORACLE_DIR = Path(__file__).parents[3] / "bench" / "peers" / "modsecurity"
ALLOWED_METHODS = "GET HEAD POST OPTIONS PUT PATCH DELETE"
ORACLE_ONLY = 200_000  # the oracle's own body-processor rules (200000-200004)


def oracle(paranoia: int) -> Any:
    sys.path.insert(0, str(ORACLE_DIR))
    try:
        from oracle import CrsOracle  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ORACLE_DIR))
    return CrsOracle(paranoia)


def sample(name: str, n: int, seed: int = 9) -> list[dict[str, Any]]:
    lines = (CORPUS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]
    random.Random(seed).shuffle(recs)
    return recs[:n]


def body(rec: dict[str, Any]) -> bytes:
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"])
    return str(rec.get("body", "")).encode()


@dataclass
class Outcome:
    oracle_blocked: bool
    oracle_ids: set[str]
    blocked: bool
    ids: set[str]


def compare(modsec: Any, waf: CrsWaf, rec: dict[str, Any]) -> Outcome | None:
    """Both verdicts on one record, sent as the oracle sends it (Host, Content-Length);
    None when the oracle refuses it for its own body-processor rules."""
    headers = [(k, v) for k, v in rec["headers"]]
    data = body(rec)
    status, ids = modsec.inspect(rec["method"], rec["target"], headers, data)
    if any(ORACLE_ONLY <= i < ORACLE_ONLY + 100 for i in ids):
        return None
    sent = [("Host", "localhost"), *headers]
    if data and not any(k.lower() == "content-length" for k, _ in headers):
        sent.append(("Content-Length", str(len(data))))
    verdict = waf.inspect(HttpRequest(rec["method"], rec["target"], sent, data))
    return Outcome(status != 200, {str(i) for i in ids}, verdict.blocked,
                   {m.rule_id for m in verdict.matches})
