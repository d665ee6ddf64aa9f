"""The OWASP Core Rule Set on Bastion's WAF (docs/waf.md, "OWASP CRS"): a loader for the
SecLang subset CRS 3.3 and 4 use (``parser``, ``model``, ``loader``) and an interpreter
with ModSecurity's sequential semantics on the engine's decoded request (``interpreter``).

    ruleset = load_crs(Path("/usr/share/modsecurity-crs"), paranoia=1)
    verdict = CrsWaf(ruleset).inspect(HttpRequest("GET", "/?q=1"))
"""

from bastion.edge.waf.crs.combined import CombinedWaf
from bastion.edge.waf.crs.interpreter import CrsWaf
from bastion.edge.waf.crs.loader import Ruleset, load_crs

__all__ = ["CombinedWaf", "CrsWaf", "Ruleset", "load_crs"]
