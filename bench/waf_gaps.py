"""Where the WAF misses: detection per family and per source file, in-process (no HTTP).

    .venv/bin/python bench/waf_gaps.py [--corpus bench/out/waf-external] [--paranoia 1]
                                       [--misses FAMILY|SOURCE-SUBSTRING] [--limit 40]

Held-out discipline: the source files of the public corpus are split in two halves by a hash
of the file name (``tune`` and ``check``); rules are tuned on the misses of the ``tune`` half
only and the ``check`` half tells whether an improvement generalises. The benign corpus
(tests/edge/waf/corpus/benign.jsonl) gives the false-positive rate.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.edge.waf import HttpRequest, Waf, WafConfig  # noqa: E402
from bastion.edge.waf.engine import load_rules  # noqa: E402


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def body_of(rec: dict[str, Any]) -> bytes:
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"])
    return str(rec.get("body", "")).encode("utf-8", "surrogateescape")


def source_file(rec: dict[str, Any]) -> str:
    return str(rec["source"]).split("#", 1)[0]


def half(rec: dict[str, Any]) -> str:
    digest = hashlib.sha256(source_file(rec).encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "check"


def blocked(waf: Waf, rec: dict[str, Any]) -> tuple[bool, list[str]]:
    req = HttpRequest(rec["method"], rec["target"], [(k, v) for k, v in rec["headers"]],
                      body_of(rec))
    v = waf.inspect(req)
    return v.blocked, [m.rule_id for m in v.matches] or [f"status {v.status}"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT / "bench" / "out" / "waf-external"))
    ap.add_argument("--paranoia", type=int, default=1)
    ap.add_argument("--misses", default="", help="list misses of this family or source")
    ap.add_argument("--half", default="", choices=["", "tune", "check"])
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--files", action="store_true", help="print per source file")
    ap.add_argument("--rules-dir", default="", help="TOML rules to use instead of the pack "
                    "(e.g. an older copy, for before/after figures)")
    args = ap.parse_args()
    rules = load_rules(sorted(Path(args.rules_dir).glob("*.toml"))) if args.rules_dir else None
    waf = Waf(WafConfig(paranoia=args.paranoia, rules=rules))
    attacks = load(Path(args.corpus) / "attacks.jsonl")
    benign = load(ROOT / "tests" / "edge" / "waf" / "corpus" / "benign.jsonl")
    per: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses: list[tuple[dict[str, Any], list[str]]] = []
    for rec in attacks:
        hit, ids = blocked(waf, rec)
        for key in ((rec["family"], half(rec)), (rec["family"], "all"), ("ALL", half(rec)),
                    ("ALL", "all")):
            per[key][0] += hit
            per[key][1] += 1
        per_file[f"{half(rec):5} {source_file(rec)}"][0] += hit
        per_file[f"{half(rec):5} {source_file(rec)}"][1] += 1
        want = args.misses and (rec["family"] == args.misses or args.misses in rec["source"])
        if not hit and want and (not args.half or half(rec) == args.half):
            misses.append((rec, ids))
    fps = []
    for rec in benign:
        hit, ids = blocked(waf, rec)
        if hit:
            fps.append((rec, ids))
    print(f"PL{args.paranoia}   family      tune            check           all")
    for fam in sorted({k[0] for k in per}):
        cells = []
        for h in ("tune", "check", "all"):
            d, n = per.get((fam, h), [0, 0])
            cells.append(f"{d:4}/{n:<4} {100 * d / n if n else 0:5.1f}%")
        print(f"      {fam:<10} " + "  ".join(cells))
    print(f"benign false positives: {len(fps)}/{len(benign)} "
          f"({100 * len(fps) / len(benign):.2f}%)")
    for rec, ids in fps[: args.limit]:
        print("  FP", rec["id"], ids, rec["target"][:100], str(rec.get("body", ""))[:100])
    if args.files:
        for name, (d, n) in sorted(per_file.items()):
            print(f"  {d:4}/{n:<4} {name}")
    for rec, ids in misses[: args.limit]:
        print("MISS", rec["source"].split("/")[-1][:60], rec["placement"], ids[:4])
        print("    ", rec["method"], rec["target"][:300])
        for k, v in rec["headers"]:
            if k.lower() not in ("user-agent", "accept", "accept-language", "accept-encoding",
                                 "referer") or "crs" not in rec["placement"]:
                print("     ", k, ":", v[:200])
        if rec.get("body") or rec.get("body_b64"):
            print("     body:", body_of(rec)[:300])
    if misses:
        print(f"{len(misses)} misses listed (limit {args.limit})")


if __name__ == "__main__":
    main()
