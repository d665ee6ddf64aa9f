"""Transformations CRS uses beyond the engine's (``sha1``, ``hexEncode``, ``length``,
``trim*``); names are matched case-insensitively, as ModSecurity v3 does."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from bastion.edge.waf.transforms import TRANSFORMS

Transform = Callable[[str], str]


def sha1(value: str) -> str:
    # ModSecurity hashes bytes and yields raw bytes; latin-1 keeps them one char per byte
    return hashlib.sha1(value.encode("utf-8", "surrogateescape"),
                        usedforsecurity=False).digest().decode("latin-1")


def hex_encode(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").hex()


EXTRA: dict[str, Transform] = {
    "sha1": sha1,
    "hexEncode": hex_encode,
    "length": lambda v: str(len(v.encode("utf-8", "surrogateescape"))),
    "trim": str.strip,
    "trimLeft": str.lstrip,
    "trimRight": str.rstrip,
}
_BY_LOWER: dict[str, Transform] = {k.lower(): v for k, v in {**TRANSFORMS, **EXTRA}.items()}


def find_transform(name: str) -> Transform | None:
    return _BY_LOWER.get(name.lower())
