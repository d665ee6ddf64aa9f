"""``bastion keys``: token signing keys (publish-before-sign rotation)."""

from __future__ import annotations

from typing import Any

import typer

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, operator, plural

keys_app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Promote the published next key to signing, retire the current one, publish a new next."""
    from bastion.runtime import record_change
    from bastion.tokens import keys

    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            kid = await keys.rotate(db, p.wrapper, settings.signing_alg, settings.max_jwt_ttl)
            await record_change(p, db, "RotateSigningKey", user_identity=operator(),
                                response_elements={"activeKid": kid})
        return {"active_kid": kid}

    data = _run(settings, job)
    refresh = settings.key_refresh_interval
    within = plural(int(refresh), "second") if refresh == int(refresh) else f"{refresh:g} seconds"
    _emit(as_json, data, f"now signing with {data['active_kid']}; running servers pick it up "
                         f"within {within}")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List signing keys and their state."""
    from bastion.tokens import keys

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at,
                     "activated_at": k.activated_at, "retired_at": k.retired_at,
                     "expires_at": k.expires_at} for k in await keys.list_keys(db)]

    rows = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, rows, "\n".join(f"{r['kid']:18} {r['alg']:6} {r['status']}" for r in rows))
