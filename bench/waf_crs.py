"""CPU per request of Bastion's CRS mode (``bastion.edge.waf.crs``) on the three requests of
bench/waf_engine.py, next to ModSecurity v3 (the ``libmodsecurity`` wheel) loading the same
CRS files (issue 9: Apache + ModSecurity 2 + CRS 3.3 spends 26 ms on the 2 KiB JSON POST).

    .venv/bin/python bench/waf_crs.py --crs /usr/share/modsecurity-crs [--rounds 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bastion.edge.waf.crs import CrsWaf, load_crs

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "peers" / "modsecurity"))
from waf_engine import requests  # noqa: E402

ALLOWED = "GET HEAD POST OPTIONS PUT PATCH DELETE"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crs", type=Path, default=Path("/usr/share/modsecurity-crs"))
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--no-oracle", action="store_true", help="skip ModSecurity v3")
    args = ap.parse_args()
    for paranoia in (1, 2):
        start = time.process_time()
        waf = CrsWaf(load_crs(args.crs, paranoia=paranoia, tx={"allowed_methods": ALLOWED}))
        print(f"PL{paranoia}  load + compile {time.process_time() - start:6.1f} s CPU")
        modsec = None
        if not args.no_oracle:
            from oracle import CrsOracle  # type: ignore[import-not-found]

            modsec = CrsOracle(paranoia)
        for name, req in requests().items():
            verdict = waf.inspect(req)
            rounds = max(10, args.rounds if "form" not in name else args.rounds // 10)
            start = time.process_time()
            for _ in range(rounds):
                waf.inspect(req)
            us = (time.process_time() - start) / rounds * 1e6
            line = f"PL{paranoia}  {name:<24} Bastion CRS {us:8.0f} µs"
            if modsec is not None:
                headers = [(k, v) for k, v in req.headers if k.lower() != "host"]
                start = time.process_time()
                for _ in range(rounds):
                    modsec.inspect(req.method, req.target, headers, req.body)
                ms_us = (time.process_time() - start) / rounds * 1e6
                line += f"   ModSecurity v3 {ms_us:8.0f} µs"
            print(line + f"   (blocked: {verdict.blocked})")


if __name__ == "__main__":
    main()
