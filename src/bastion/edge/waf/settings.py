"""The WAF's part of the settings: the shape of a per-route exclusion, and the ``Waf`` and
middleware options built from ``Settings`` (``waf_*``, docs/waf.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.edge.waf.dbcache import DbCache
from bastion.edge.waf.engine import COLLECTIONS, Exclusion, Waf, WafConfig

if TYPE_CHECKING:
    from bastion.config import Settings


class ExclusionConfig(BaseModel):
    """Rules not applied on some paths (``[[waf_exclusions]]`` in TOML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: tuple[str, ...] = Field(("/",), description="Paths (each covers the paths "
                                   "below it; / is every path).")
    rule_ids: tuple[str, ...] = Field((), description="Rule ids (bastion waf rules).")
    families: tuple[str, ...] = Field((), description="Rule families (sqli, xss, ...); "
                                      "with rule_ids empty too: every rule.")
    targets: tuple[str, ...] = Field((), description="Where: ARGS:name, JSON:a.b, a "
                                     "collection (JSON), a prefix (JSON:policy.*); empty: "
                                     "the whole request.")

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or not all(p.startswith("/") and p.isprintable() for p in v):
            raise ValueError("exclusion paths must be absolute, e.g. /api/notes")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if t.split(":", 1)[0] not in COLLECTIONS:
                raise ValueError(f"unknown exclusion target {t!r}; collections: "
                                 f"{', '.join(sorted(COLLECTIONS))}")
        return v

    def exclusion(self) -> Exclusion:
        return Exclusion(self.paths, self.rule_ids, self.families, self.targets)


def exclusions(settings: Settings) -> list[Exclusion]:
    """``waf_exclusions`` and the ``waf_exclusions`` (rule ids) of proxied routes."""
    out = [e.exclusion() for e in settings.waf_exclusions]
    for route in settings.routes:
        if route.waf_exclusions and route.path_prefix:
            out.append(Exclusion((route.path_prefix,), tuple(route.waf_exclusions)))
    return out


def db_cache(settings: Settings) -> DbCache:
    """Where compiled databases are kept (``waf_cache_dir``, else ``data_dir/cache/waf``),
    their key in the data dir; with no data dir yet, ``DbCache.default()`` (nothing is
    created in the working directory)."""
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        return DbCache(settings.waf_cache_dir) if settings.waf_cache_dir else DbCache.default()
    return DbCache(settings.waf_cache_dir or data_dir / "cache" / "waf",
                   key_file=data_dir / "waf-cache.key")


def build_waf(settings: Settings) -> Waf:
    """The engine for ``settings`` (compiled databases come from ``db_cache``)."""
    cache = db_cache(settings)
    config = WafConfig(paranoia=settings.waf_paranoia,
                       inbound_threshold=settings.waf_inbound_threshold,
                       body_limit=settings.waf_body_limit,
                       exclusions=exclusions(settings), cache=cache)
    if settings.waf_crs_dir is None:
        return Waf(config)
    from bastion.edge.waf.crs import CombinedWaf, CrsWaf, load_crs

    ruleset = load_crs(settings.waf_crs_dir, paranoia=settings.waf_paranoia, tx={
        "inbound_anomaly_score_threshold": str(settings.waf_inbound_threshold)})
    return CombinedWaf(config, CrsWaf(ruleset, body_limit=settings.waf_body_limit, cache=cache),
                       rulesets=settings.waf_rulesets)


def middleware_options(settings: Settings) -> dict[str, Any]:
    return {"mode": settings.waf_mode, "fail_open": settings.waf_fail_open,
            "unlimited_paths": settings.waf_body_unlimited_paths}
