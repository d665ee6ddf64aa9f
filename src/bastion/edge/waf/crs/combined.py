"""The WAF the app runs when ``waf_crs_dir`` is set: Bastion's own pack, the CRS, or both
(``waf_rulesets``). A ``Waf`` subclass, so the middleware and the CLI take it unchanged;
with both, a request is refused when either refuses it and the matches of both are kept."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from bastion.edge.waf.crs.interpreter import CrsWaf
from bastion.edge.waf.decode import HttpRequest
from bastion.edge.waf.engine import Verdict, Waf, WafConfig

Rulesets = Literal["own", "crs", "both"]


class CombinedWaf(Waf):
    def __init__(self, config: WafConfig, crs: CrsWaf, *, rulesets: Rulesets = "both") -> None:
        if rulesets not in ("crs", "both"):
            raise ValueError("rulesets is crs or both")
        super().__init__(config if rulesets == "both" else replace(config, rules=[]))
        self.crs = crs
        self.own = rulesets == "both"

    def inspect(self, request: HttpRequest, *, body_limit: int | None = None) -> Verdict:
        crs = self.crs.inspect(request, body_limit=body_limit or self.config.body_limit)
        if not self.own or crs.status not in (200, 403):
            return crs
        own = super().inspect(request, body_limit=body_limit)
        if own.status not in (200, 403):
            return own
        blocked = own.blocked or crs.blocked
        reason = "; ".join(v.reason for v in (own, crs) if v.blocked)
        return Verdict(blocked, max(own.score, crs.score), own.matches + crs.matches,
                       403 if blocked else 200, reason)
