"""Bastion's web application firewall (docs/waf.md): requests decoded as a backend would
decode them, normalised, matched against Bastion's own rule pack in one Hyperscan pass per
transformation chain, scored as in the OWASP Core Rule Set.

    waf = Waf(WafConfig(paranoia=1, inbound_threshold=5, body_limit=131072))
    verdict = waf.inspect(HttpRequest("GET", "/search?q=1", [("user-agent", "curl/8")]))
    verdict.blocked, verdict.score, verdict.matches

``WafMiddleware`` (``bastion.edge.waf.middleware``) puts it in front of any ASGI app.
"""

from bastion.edge.waf.decode import HttpRequest, Refused
from bastion.edge.waf.engine import Exclusion, Match, Rule, Verdict, Waf, WafConfig, load_rules

__all__ = ["Exclusion", "HttpRequest", "Match", "Refused", "Rule", "Verdict", "Waf",
           "WafConfig", "load_rules"]
