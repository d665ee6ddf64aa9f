"""The Bastion side of bench/waf.py: a bare Starlette app answering 200 "ok" to every request,
behind ``bastion.edge.waf.middleware.WafMiddleware`` (``--waf on``) or nothing (``--waf off``),
under uvicorn on 127.0.0.1.

    .venv/bin/python bench/waf_app.py --port 18081 --paranoia 1 --waf on
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def ok(request: Request) -> PlainTextResponse:
    await request.body()  # a backend reads what it is sent
    return PlainTextResponse("ok\n")


def build(paranoia: int, waf: bool) -> Any:
    app: Any = Starlette(routes=[Route("/{path:path}", ok, methods=METHODS)])
    if not waf:
        return app
    from bastion.edge.waf import WafConfig
    from bastion.edge.waf.middleware import WafMiddleware

    config = WafConfig(paranoia=paranoia)
    params = inspect.signature(WafMiddleware).parameters
    if "config" in params:
        return WafMiddleware(app, config=config)
    if "waf" in params:
        from bastion.edge.waf import Waf

        return WafMiddleware(app, waf=Waf(config))
    return WafMiddleware(app, config)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--paranoia", type=int, default=1)
    ap.add_argument("--waf", choices=["on", "off"], default="on")
    args = ap.parse_args()
    app = build(args.paranoia, args.waf == "on")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                lifespan="off")


if __name__ == "__main__":
    main()
