"""Compiled databases reused across ``Waf`` builds (``bastion.edge.waf.dbcache``, docs/waf.md
"Build cache"): the same verdicts from a database loaded from the cache as from a fresh
compile; a damaged, swapped or forged file is refused, recompiled and overwritten; an entry
made for other patterns is never used; processes building at once leave a valid cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hyperscan
import pytest

from bastion.edge.waf import HttpRequest, Rule, Waf, WafConfig, dbcache, engine
from bastion.edge.waf.crs import CrsWaf, interpreter, load_crs
from bastion.edge.waf.dbcache import DbCache, digest
from tests.edge.waf.test_corpus import ATTACKS, BENIGN, body_of
from tests.racers import race

CRS = Path("/usr/share/modsecurity-crs")
HEADERS = [
    ("host", "api.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("accept", "*/*"),
]
SQLI = HttpRequest("GET", "/search?q=1%27%20union%20select%20password%20from%20users--", HEADERS)
XSS = HttpRequest("GET", "/?x=%3Cscript%3Ealert(1)%3C/script%3E", HEADERS)
SAFE = HttpRequest("GET", "/search?q=blue+shoes&page=2", HEADERS)
# exact, skipped (Hyperscan and RE2 both refuse a backreference), RE2 alone (Hyperscan has
# no ungreedy mode), exact: the plan leaves two out and the last pattern's id shifts
CUSTOM = [
    Rule("1", "test", ("ARGS",), "rx", r"union\s+select"),
    Rule("2", "test", ("ARGS",), "rx", r"(a)\1evil"),
    Rule("3", "test", ("ARGS",), "rx", r"(?U)evil.+payload"),
    Rule("4", "test", ("ARGS",), "rx", r"<script"),
]


@pytest.fixture(autouse=True)
def fresh_process() -> None:
    """Each build below starts as a new process would: nothing compiled in memory."""
    dbcache.clear_memo()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "waf"


def disk(directory: Path) -> DbCache:
    return DbCache(directory, persist_after=0)  # every database written, however quick


def forbid_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on any Hyperscan compile fails the test: databases come from the cache."""

    def refuse(*args: Any) -> Any:
        raise AssertionError("compiled instead of loaded from the cache")

    monkeypatch.setattr(engine, "_compile", refuse)
    monkeypatch.setattr(interpreter, "_compile", refuse)


def sample() -> list[HttpRequest]:
    records = ATTACKS[::40] + BENIGN[::40]
    return [
        HttpRequest(r["method"], r["target"], [(k, v) for k, v in r["headers"]], body_of(r))
        for r in records
    ] + [SQLI, XSS, SAFE]


def verdicts(waf: Any, requests: list[HttpRequest]) -> list[tuple[bool, int, int, list[str]]]:
    out = []
    for req in requests:
        v = waf.inspect(req)
        out.append((v.blocked, v.status, v.score, sorted(m.rule_id for m in v.matches)))
    return out


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.hsdb"), key=lambda p: p.stat().st_size)


def test_a_cached_build_decides_as_a_fresh_one(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = sample()
    fresh = Waf(WafConfig(paranoia=2, cache=disk(cache_dir)))  # compiles and writes
    assert entries(cache_dir)
    dbcache.clear_memo()
    forbid_compile(monkeypatch)
    cached = Waf(WafConfig(paranoia=2, cache=disk(cache_dir)))
    assert len(requests) > 100
    expected = verdicts(fresh, requests)
    assert any(v[0] for v in expected) and not all(v[0] for v in expected)
    assert verdicts(cached, requests) == expected


def test_several_wafs_in_a_process_share_databases(cache_dir: Path) -> None:
    first = Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    second = Waf(WafConfig(rules=CUSTOM, inbound_threshold=10, cache=DbCache(None)))
    assert [c.db for c in first.chains] == [c.db for c in second.chains]
    assert second.inspect(SQLI).score == first.inspect(SQLI).score > 0


def test_a_plan_with_patterns_left_out_maps_ids_the_same(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    assert set(fresh.skipped) == {"2"}
    dbcache.clear_memo()
    forbid_compile(monkeypatch)
    cached = Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    assert cached.skipped == fresh.skipped
    for value, rule in [
        ("1 union  select 2", "1"),
        ("<script>", "4"),
        ("evil-payload", "3"),
        ("hello", None),
    ]:
        req = HttpRequest("GET", "/?q=" + quote(value), HEADERS)
        for waf in (fresh, cached):
            assert {m.rule_id for m in waf.inspect(req).matches} == ({rule} if rule else set())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Bastion's pack in a cache (``<dir>/waf``, key ``<dir>/waf.key``), and the entry of
    the chain whose rules refuse ``SQLI``."""
    root = tmp_path_factory.mktemp("pristine")
    names: dict[str, list[bytes]] = {}
    real = dbcache.digest

    def spy(kind: str, patterns: Any, flags: Any) -> str:
        name = real(kind, patterns, flags)
        names[name] = list(patterns)
        return name

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dbcache, "digest", spy)
        dbcache.clear_memo()
        waf = Waf(WafConfig(cache=disk(root / "waf")))
    matched = {m.rule_id for m in waf.inspect(SQLI).matches}
    wanted = {r.argument.encode() for r in waf.rules if r.id in matched}
    name = next(n for n, patterns in names.items() if wanted & set(patterns))
    return root, root / "waf" / (name + dbcache.SUFFIX)


@pytest.mark.parametrize(
    "damage",
    [
        "flipped-byte",
        "truncated",
        "empty",
        "garbage",
        "swapped",
        "forged-with-another-key",
        "symlink",
        "directory",
    ],
)
def test_a_damaged_entry_is_recompiled_and_the_waf_still_blocks(
    pristine: tuple[Path, Path],
    tmp_path: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(pristine[0], tmp_path / "copy")
    cache_dir = tmp_path / "copy" / "waf"
    target = cache_dir / pristine[1].name  # the database that refuses SQLI
    other = next(p for p in entries(cache_dir) if p != target)
    original = target.read_bytes()
    if damage == "flipped-byte":
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01  # inside the serialized database
        target.write_bytes(bytes(data))
    elif damage == "truncated":
        target.write_bytes(original[: len(original) // 3])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "garbage":
        target.write_bytes(os.urandom(len(original)))
    elif damage == "swapped":  # a valid entry of other patterns under this name
        target.write_bytes(other.read_bytes())
    elif damage == "forged-with-another-key":
        # what someone who can write the directory but not read the key can make: a
        # well-formed entry with the right plan whose database matches nothing
        start = len(dbcache.FORMAT) + dbcache.TAG
        (size,) = struct.unpack(">I", original[start : start + 4])
        plan = json.loads(original[start + 4 : start + 4 + size])["plan"]
        kept = [f for f in plan if f != -1]
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[b"zq{9}x"] * len(kept), ids=list(range(len(kept))), flags=kept)
        target.write_bytes(dbcache._encode(os.urandom(32), target.stem, plan, hyperscan.dumpb(db)))
    elif damage == "symlink":
        target.unlink()
        target.symlink_to(other)
    elif damage == "directory":
        target.unlink()
        target.mkdir()
    dbcache.clear_memo()
    with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
        waf = Waf(WafConfig(cache=disk(cache_dir)))
    assert target.name in caplog.text and "recompiling" in caplog.text
    assert waf.inspect(SQLI).blocked and waf.inspect(XSS).blocked
    assert not waf.inspect(SAFE).blocked
    if damage != "directory":  # the file was overwritten with a valid entry
        assert target.is_file() and not target.is_symlink()
        dbcache.clear_memo()
        caplog.clear()
        forbid_compile(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
            again = Waf(WafConfig(cache=disk(cache_dir)))
        assert not caplog.text
        assert again.inspect(SQLI).blocked


def test_an_entry_made_for_other_patterns_is_never_used(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = [*CUSTOM[:3], Rule("4", "test", ("ARGS",), "rx", r"<iframe")]
    Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    (mine,) = entries(cache_dir)
    dbcache.clear_memo()
    waf = Waf(WafConfig(rules=other, cache=disk(cache_dir)))  # its own entry, compiled
    assert len(entries(cache_dir)) == 2
    assert not waf.inspect(HttpRequest("GET", "/?q=%3Cscript%3E", HEADERS)).matches
    assert waf.inspect(HttpRequest("GET", "/?q=%3Ciframe%3E", HEADERS)).matches
    (theirs,) = set(entries(cache_dir)) - {mine}
    theirs.write_bytes(mine.read_bytes())  # the first set's entry under the second's name
    dbcache.clear_memo()
    with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
        waf = Waf(WafConfig(rules=other, cache=disk(cache_dir)))
    assert "authentication failed" in caplog.text
    assert waf.inspect(HttpRequest("GET", "/?q=%3Ciframe%3E", HEADERS)).matches


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("k", [b"ab"], [0]), ("k", [b"ab"], [1])),
        (("k", [b"ab"], [0]), ("k", [b"a", b"b"], [0, 0])),
        (("k", [b"a", b"b"], [0, 0]), ("k", [b"b", b"a"], [0, 0])),
        (("k", [b"ab"], [0]), ("crs", [b"ab"], [0])),
    ],
    ids=["flags", "split-patterns", "order-gives-ids", "kind"],
)
def test_the_entry_name_covers_every_input(a: Any, b: Any) -> None:
    assert digest(*a) != digest(*b)


def test_the_entry_name_covers_the_hyperscan_build(monkeypatch: pytest.MonkeyPatch) -> None:
    name = digest("k", [b"ab"], [0])
    assert "Version: " in dbcache.platform_tag()
    monkeypatch.setattr(
        dbcache,
        "platform_tag",
        lambda: "py-hyperscan 0.9.1; Version: 5.4.12 Features: AVX2; x86_64",
    )
    assert digest("k", [b"ab"], [0]) != name


def build_in_a_process(directory: str, start: Any, results: Any) -> None:
    start.wait()
    waf = Waf(WafConfig(cache=disk(Path(directory))))
    results.put(waf.inspect(SQLI).blocked)


def test_processes_building_at_once_leave_a_valid_cache(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert race(build_in_a_process, str(cache_dir), processes=2) == [True, True]
    assert entries(cache_dir)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]
    forbid_compile(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
        waf = Waf(WafConfig(cache=disk(cache_dir)))
    assert not caplog.text
    assert waf.inspect(SQLI).blocked and not waf.inspect(SAFE).blocked


def test_files_are_private(cache_dir: Path) -> None:
    Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    key = cache_dir.with_name("waf.key")
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    assert entries(cache_dir)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cache_dir.iterdir())


def test_a_key_others_can_read_turns_the_disk_cache_off(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = cache_dir.with_name("waf.key")
    key.parent.mkdir(parents=True)
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
        waf = Waf(WafConfig(rules=CUSTOM, cache=disk(cache_dir)))
    assert "not used" in caplog.text and "chmod 600" in caplog.text
    assert key.read_bytes() not in caplog.text.encode()
    assert not entries(cache_dir)
    assert waf.inspect(HttpRequest("GET", "/?q=%3Cscript%3E", HEADERS)).matches


def test_an_unusable_directory_is_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.WARNING, logger="bastion.edge.waf"):
        waf = Waf(WafConfig(rules=CUSTOM, cache=disk(tmp_path / "file" / "waf")))
    assert "not used" in caplog.text
    assert waf.inspect(HttpRequest("GET", "/?q=%3Cscript%3E", HEADERS)).matches


def test_settings_keep_the_cache_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.config import Settings
    from bastion.edge.waf.settings import db_cache

    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    assert db_cache(Settings(data_dir=data)).directory == tmp_path / "xdg" / "bastion" / "waf"
    data.mkdir()
    cache = db_cache(Settings(data_dir=data))
    assert (cache.directory, cache.key_file) == (data / "cache" / "waf", data / "waf-cache.key")
    cache = db_cache(Settings(data_dir=data, waf_cache_dir=tmp_path / "elsewhere"))
    assert (cache.directory, cache.key_file) == (tmp_path / "elsewhere", data / "waf-cache.key")


def test_a_cached_crs_build_decides_as_a_fresh_one(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (CRS / "rules").is_dir(), "run scripts/system-deps.sh (modsecurity-crs)"
    ruleset = load_crs(CRS, paranoia=1)
    fresh = CrsWaf(ruleset, cache=disk(cache_dir))  # one cold compile (~13 s)
    # some patterns run in RE2 alone: the loaded plan must leave out the same ones
    assert any(len(p.pid) < len(p.re2) for p in fresh.phases.values())
    dbcache.clear_memo()
    forbid_compile(monkeypatch)
    cached = CrsWaf(ruleset, cache=disk(cache_dir))
    assert all(cached.phases[n].pid == p.pid for n, p in fresh.phases.items())
    requests = sample()
    expected = verdicts(fresh, requests)
    assert any(v[0] for v in expected)
    assert verdicts(cached, requests) == expected
