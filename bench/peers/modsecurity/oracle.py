"""ModSecurity v3 (the ``libmodsecurity`` wheel on PyPI) with Debian's OWASP CRS 3.3, in-process:
the oracle issue 9 asks for ("on requests it blocks, your CRS mode fires the same rule ids").

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/peers/modsecurity/oracle.py 1 tests/edge/waf/corpus/benign.jsonl

Prints how many records of a corpus file ModSecurity refuses at that paranoia level and the
rules that fired most. ``CrsOracle(paranoia).inspect(method, target, headers, body)`` returns
``(status, rule_ids)`` for use in tests.

Differences from the Apache module (ModSecurity 2) that matter here: the wheel is built
without GeoIP/MaxMind, so ``REQUEST-910-IP-REPUTATION.conf`` (its ``@geoLookup`` rule) cannot
be loaded and is left out; ModSecurity 3 refuses ``SecRequestBodyInMemoryLimit``, so the
recommended settings are restated below instead of including
``/etc/modsecurity/modsecurity.conf-recommended``. On the committed benign corpus it refuses
1,626 requests at PL2 (Apache + ModSecurity 2: 1,623) and 419 at PL1 (Apache: 386): 37
multipart uploads fail ModSecurity 3's MULTIPART_UNMATCHED_BOUNDARY check (rule 200004),
which ModSecurity 2 passes. Of the committed attacks it refuses 1,813 at PL1 (Apache: 1,665).
"""

from __future__ import annotations

import base64
import glob
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import libmodsecurity

CRS_RULES = "/usr/share/modsecurity-crs/rules"
CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"

# modsecurity.conf-recommended, minus what ModSecurity 3 refuses, switched to blocking
BASE = r"""
SecRuleEngine On
SecRequestBodyAccess On
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" \
    "id:'200000',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" \
    "id:'200001',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction Reject
SecRule REQBODY_ERROR "!@eq 0" \
    "id:'200002',phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.'"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:'200003',phase:2,t:none,log,deny,status:400"
SecRule MULTIPART_UNMATCHED_BOUNDARY "!@eq 0" "id:'200004',phase:2,t:none,log,deny"
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecResponseBodyAccess Off
SecAuditEngine Off
SecArgumentSeparator &
SecCookieFormat 0
"""
# The Apache module's package (libapache2-mod-security2) ships the code-point map that
# t:urlDecodeUni uses for %uXXXX; modsecurity-crs alone does not, and ModSecurity 3 runs
# without it (the oracle must not need Apache installed).
UNICODE_MAP = "/etc/modsecurity/unicode.mapping"
if Path(UNICODE_MAP).is_file():
    BASE += f"SecUnicodeMapFile {UNICODE_MAP} 20127\n"


class CrsOracle:
    def __init__(self, paranoia: int) -> None:
        self.engine = libmodsecurity.ModSecurity()
        self.engine.set_log_callback(lambda _line: None)
        files = [p for p in sorted(glob.glob(f"{CRS_RULES}/*.conf"))
                 if not Path(p).name.startswith("REQUEST-910-")]
        conf = BASE + f"Include {CRS_SETUP}\n" + (
            f'SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}"\n'
            "SecAction \"id:900200,phase:1,nolog,pass,t:none,"
            "setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'\"\n"
        ) + "".join(f"Include {p}\n" for p in files)
        self.rules = libmodsecurity.RulesSet()
        if self.rules.load(conf) < 0:
            raise RuntimeError(self.rules.get_parser_error())

    def inspect(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                body: bytes = b"") -> tuple[int, list[int]]:
        with self.engine.transaction(self.rules) as tx:
            tx.process_connection("127.0.0.1", 40000, "127.0.0.1", 80)
            tx.process_uri(target, method, "1.1")
            tx.add_request_header("Host", "localhost")
            for name, value in headers:
                tx.add_request_header(name, value)
            if body and not any(n.lower() == "content-length" for n, _ in headers):
                tx.add_request_header("Content-Length", str(len(body)))
            tx.process_request_headers()
            if body:
                tx.append_request_body(body)
            tx.process_request_body()
            iv = tx.intervention()
            status = iv.status if iv is not None and iv.disruptive else 200
            return status, [m.rule_id for m in tx.get_rule_messages()]


def record_body(rec: dict[str, Any]) -> bytes:
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"])
    return str(rec.get("body", "")).encode()


def main() -> None:
    paranoia, path = int(sys.argv[1]), Path(sys.argv[2])
    oracle = CrsOracle(paranoia)
    refused, rules = 0, Counter[int]()
    records = [json.loads(line) for line in path.open(encoding="utf-8")]
    for rec in records:
        status, ids = oracle.inspect(rec["method"], rec["target"],
                                     [(k, v) for k, v in rec["headers"]], record_body(rec))
        if status != 200:
            refused += 1
            rules.update(set(ids))
    print(f"PL{paranoia}: {refused} of {len(records)} refused")
    for rule, n in rules.most_common(15):
        print(f"  {rule}: {n}")


if __name__ == "__main__":
    main()
