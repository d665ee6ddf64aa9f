"""An attack corpus from public collections, read from local git snapshots (not committed).

Sources (licences in tests/edge/waf/corpus/README.md):

- ``coreruleset/coreruleset`` tests/regression/tests (Apache-2.0): every go-ftw test of the
  request attack rule files (913, 921, 930-934, 941, 942, 944) that expects a rule to fire,
  sent as written (method, URI, headers, body; ``encoded_request`` decoded).
- ``swisskyrepo/PayloadsAllTheThings`` (MIT): the Intruder/Files payload lists per family.
- ``payloadbox/sql-injection-payload-list`` and ``payloadbox/xss-payload-list`` (MIT).

List payloads are placed with the same functions as the committed corpus (waf_corpus.py) and
sampled per family with a fixed seed. The snapshots are read with ``git show`` from
``<mirrors>/<owner>+<name>/repo``.
"""

from __future__ import annotations

import base64
import random
import subprocess
from pathlib import Path
from typing import Any

import yaml
from waf_corpus import FAMILY_PLACEMENTS, PLACEMENTS, Request, record, sample_unique

CRS_RULE_FAMILY = {
    "913": "scanner", "930": "lfi", "931": "rfi", "932": "rce", "933": "rce", "941": "xss",
    "942": "sqli", "944": "java",
}

LISTS: dict[str, list[tuple[str, str]]] = {
    "swisskyrepo/PayloadsAllTheThings": [
        ("sqli", "SQL Injection/Intruder/Auth_Bypass.txt"),
        ("sqli", "SQL Injection/Intruder/Generic_Fuzz.txt"),
        ("sqli", "SQL Injection/Intruder/Generic_UnionSelect.txt"),
        ("sqli", "SQL Injection/Intruder/Generic_TimeBased.txt"),
        ("sqli", "SQL Injection/Intruder/SQLi_Polyglots.txt"),
        ("sqli", "SQL Injection/Intruder/FUZZDB_MYSQL.txt"),
        ("xss", "XSS Injection/Intruders/IntrudersXSS.txt"),
        ("xss", "XSS Injection/Intruders/JHADDIX_XSS.txt"),
        ("xss", "XSS Injection/Intruders/XSS_Polyglots.txt"),
        ("xss", "XSS Injection/Intruders/port_swigger_xss_cheatsheet_event_handlers.txt"),
        ("rce", "Command Injection/Intruder/command-execution-unix.txt"),
        ("rce", "Command Injection/Intruder/command_exec.txt"),
        ("lfi", "Directory Traversal/Intruder/directory_traversal.txt"),
        ("lfi", "Directory Traversal/Intruder/traversals-8-deep-exotic-encoding.txt"),
        ("lfi", "File Inclusion/Intruders/JHADDIX_LFI.txt"),
        ("lfi", "File Inclusion/Intruders/php-filter-iconv.txt"),
        ("nosqli", "NoSQL Injection/Intruder/NoSQL.txt"),
        ("nosqli", "NoSQL Injection/Intruder/MongoDB.txt"),
        ("ldap", "LDAP Injection/Intruder/LDAP_FUZZ.txt"),
        ("ssti", "Server Side Template Injection/Intruder/ssti.fuzz"),
        ("crlf", "CRLF Injection/Files/crlfinjection.txt"),
        ("xxe", "XXE Injection/Intruders/XXE_Fuzzing.txt"),
        ("xxe", "XXE Injection/Intruders/xml-attacks.txt"),
    ],
    "payloadbox/sql-injection-payload-list": [
        ("sqli", "Intruder/detect/Generic_SQLI.txt"),
        ("sqli", "Intruder/detect/GenericBlind.txt"),
        ("sqli", "Intruder/exploit/Auth_Bypass.txt"),
        ("nosqli", "Intruder/detect/NoSQL/no-sql.txt"),
    ],
    "payloadbox/xss-payload-list": [("xss", "Intruder/xss-payload-list.txt")],
}


def git_show(mirrors: Path, repo: str, path: str) -> str | None:
    gitdir = mirrors / repo.replace("/", "+") / "repo"
    r = subprocess.run(["git", "--git-dir", str(gitdir), "show", f"HEAD:{path}"],
                       capture_output=True, check=False)
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


def git_ls(mirrors: Path, repo: str, under: str) -> list[str]:
    gitdir = mirrors / repo.replace("/", "+") / "repo"
    r = subprocess.run(["git", "--git-dir", str(gitdir), "ls-tree", "-r", "--name-only", "HEAD",
                        under], capture_output=True, check=False, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def parse_raw(raw: bytes) -> tuple[str, str, list[list[str]], bytes | None] | None:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 2:
        return None
    headers = [[k.strip(), v.strip()] for k, _, v in (x.partition(":") for x in lines[1:] if x)]
    return parts[0], parts[1], headers, body or None


def crs_tests(mirrors: Path) -> list[Request]:
    repo = "coreruleset/coreruleset"
    out: list[Request] = []
    for path in git_ls(mirrors, repo, "tests/regression/tests"):
        name = path.rsplit("/", 1)[-1]
        fam = CRS_RULE_FAMILY.get(name[:3])
        if name[:3] == "934":
            fam = "ssrf" if name.startswith(("934110", "934120")) else "rce"
        if name[:3] == "921":
            fam = "smuggling" if name.startswith(("921110", "921130", "921140")) else "crlf"
        if fam is None or not name.endswith(".yaml"):
            continue
        text = git_show(mirrors, repo, path)
        if text is None:
            continue
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        for test in doc.get("tests") or []:
            for stage in test.get("stages") or []:
                stage = stage.get("stage", stage)
                inp, outp = stage.get("input") or {}, stage.get("output") or {}
                log = outp.get("log") or {}
                expected = log.get("expect_ids") or outp.get("log_contains") or (
                    outp.get("status") == 403)
                if not expected:
                    continue
                placed = from_ftw(inp)
                if placed is not None:
                    tid = test.get("test_id", test.get("test_title"))
                    src = f"coreruleset/coreruleset:{path}#{tid}"
                    out.append(record(placed, fam, src))
    return out


def from_ftw(inp: dict[str, Any]) -> tuple[str, str, list[list[str]], bytes | None, str] | None:
    if inp.get("encoded_request"):
        parsed = parse_raw(base64.b64decode(inp["encoded_request"]))
        if parsed is None:
            return None
        method, target, headers, body = parsed
    else:
        method = str(inp.get("method", "GET"))
        target = str(inp.get("uri", "/"))
        headers = [[str(k), str(v)] for k, v in (inp.get("headers") or {}).items()]
        data = inp.get("data")
        if isinstance(data, list):
            data = "\r\n".join(str(x) for x in data)
        body = None if data in (None, "") else str(data).encode("utf-8", "surrogateescape")
    if not target.startswith("/"):
        target = "/" + target
    headers = [h for h in headers if h[0].lower() not in ("host", "content-length", "connection")]
    if body is not None and not any(h[0].lower() == "content-type" for h in headers):
        headers.append(["Content-Type", "application/x-www-form-urlencoded"])
    return method, target, headers, body, "crs-test"


def payload_lists(mirrors: Path, rng: random.Random) -> list[Request]:
    out: list[Request] = []
    for repo, files in LISTS.items():
        for fam, path in files:
            text = git_show(mirrors, repo, path)
            if text is None:
                continue
            payloads = [x for x in dict.fromkeys(line.rstrip("\r\n") for line in text.splitlines())
                        if x.strip() and not x.startswith("#")]
            where = FAMILY_PLACEMENTS.get(fam, ("query", "form", "json"))
            if fam == "xxe":
                where = ("xml-doc",)
            for p in payloads:
                w = rng.choice(where)
                if w == "xml-doc":
                    placed = ("POST", "/api/import", [["content-type", "application/xml"]],
                              p.encode(), "xml")
                else:
                    placed = PLACEMENTS[w](p, fam, rng)
                if placed is not None:
                    out.append(record(placed, fam, f"{repo}:{path}"))
    return out


def build(mirrors: Path, seed: int, per_family: int) -> list[Request]:
    rng = random.Random(f"{seed}:external")
    cands = crs_tests(mirrors) + payload_lists(mirrors, rng)
    out: list[Request] = []
    for fam in sorted({c["family"] for c in cands}):
        crs = [c for c in cands if c["family"] == fam and c["placement"] == "crs-test"]
        rest = [c for c in cands if c["family"] == fam and c["placement"] != "crs-test"]
        picked = sample_unique(crs, per_family, rng)
        out += picked + sample_unique(rest, max(0, per_family - len(picked) // 2), rng)
    return out
