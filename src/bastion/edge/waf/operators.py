"""Operators that are code, not a regular expression (SecLang's ``@detectSQLi`` and
``@detectXSS``, and Bastion's ``@ssrf`` and ``@log4shell``). Each takes a transformed value
and returns the evidence (a fingerprint or the offending part) or None; each is linear in
its input and never raises on any string.

``detect_sqli`` and ``detect_xss`` (the tokenizers, ``sqli.py`` and ``xss.py``) are
imported on first use, so the engine loads without them; an operator whose module is absent
is reported by ``available``.
"""

from __future__ import annotations

import importlib
import ipaddress
import unicodedata
from collections.abc import Callable
from urllib.parse import urlsplit

from bastion.edge.waf.transforms import url_decode

Operator = Callable[[str], "str | None"]

# characters without which the tokenizers cannot find anything: values made only of letters,
# digits and ``-_.@:/`` (ids, tokens, e-mail addresses, dates) skip them
SQLI_GATE = frozenset("'\"`;()#=<>|&*/-+ \t\n\r\x0b\x0c\\%,")
XSS_GATE = frozenset("<>&\"'`()=:\\")


def _lazy(module: str, name: str) -> Operator:
    cache: list[Operator] = []

    def call(value: str) -> str | None:
        if not cache:
            mod = importlib.import_module(f"bastion.edge.waf.{module}")
            cache.append(getattr(mod, name))
        return cache[0](value)

    return call


def available(module: str) -> bool:
    try:
        importlib.import_module(f"bastion.edge.waf.{module}")
    except ImportError:
        return False
    return True


# --- SSRF: hosts that reach the server itself or the cloud's metadata service ------------

METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.com", "kubernetes.default.svc",
    "kubernetes.default", "localhost", "localhost.localdomain", "ip6-localhost",
    "ip6-loopback", "metadata.packet.net", "metadata.platformequinix.com",
    "metadata.tencentyun.com", "metadata.oraclecloud.com", "host.docker.internal",
    "gateway.docker.internal", "host.containers.internal"})
# suffixes of names that only resolve inside a cloud network or a cluster
INTERNAL_SUFFIXES = (".localhost", ".internal", ".cluster.local", ".svc")
METADATA_IPS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
                ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
                ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
                ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"))
SCHEMES = ("http", "https", "ftp", "gopher", "dict", "ldap", "tftp", "file", "jar", "netdoc",
           "ws", "wss", "sftp", "smb", "ftps", "ldaps", "acap", "imap", "imaps", "pop3",
           "pop3s", "smtp", "irc", "ssh", "telnet", "rtmp", "rtsp", "nntp", "redis", "mysql",
           "postgres", "postgresql", "mongodb", "memcached", "rmi", "vnc", "xmpp", "svn",
           "git")
SCHEME_SET = frozenset(SCHEMES)
# full stops a URL parser (IDNA) reads as "."
DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
HOST_END = frozenset("/?#@ \t\r\n\"'<>`,;|{}^&")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any notation ``inet_aton`` accepts: dotless decimal
    (``2130706433``), hex (``0x7f000001``), octal parts (``0177.0.0.1``), 1-4 parts."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums: list[int] = []
    for part in parts:
        p = part.lower()
        try:
            if p.startswith("0x"):
                n = int(p[2:] or "0", 16)
                if len(parts) == 1 and len(p) > 10:  # parsers keep the low 32 bits
                    n &= 0xFFFFFFFF
                    p = p[:2] + p[-8:]
            elif len(p) > 1 and p.startswith("0"):
                n = int(p, 8)
            else:
                n = int(p, 10) if p.isdigit() else -1
        except ValueError:
            return None
        if n < 0 or len(p) > 12:
            return None
        nums.append(n)
    last_bits = 32 - 8 * (len(nums) - 1)
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 1 << last_bits:
        return None
    value = 0
    for n in nums[:-1]:
        value = value << 8 | n
    value = value << last_bits | nums[-1]
    return ipaddress.IPv4Address(value)


def internal_host(host: str) -> bool:
    """True for loopback, link-local, "this host" and the cloud metadata services, in
    any notation (names, IPv4 forms, IPv6 incl. IPv4-mapped, zone ids, brackets)."""
    host = host.strip().strip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.partition("%")[0]  # an IPv6 zone id
    if not host:
        return False
    if host in METADATA_NAMES or host.endswith(INTERNAL_SUFFIXES):
        return True
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = _inet_aton(host) if all(c in "0123456789abcdefx." for c in host) else None
    if addr is None:
        if ".nip.io" in host or ".xip.io" in host or ".sslip.io" in host:
            label = host.split(".nip.io")[0].split(".xip.io")[0].split(".sslip.io")[0]
            return internal_host(label.rsplit("-", 1)[-1].replace("-", ".")) or \
                internal_host(".".join(label.split(".")[-4:]))
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped or addr.sixtofour
        if mapped is not None:
            addr = mapped
        elif addr.packed[:12] == bytes(12) and int(addr) > 1:  # IPv4-compatible ::a.b.c.d
            addr = ipaddress.IPv4Address(addr.packed[12:])
    return any(addr in net for net in METADATA_IPS)


def _normal(value: str) -> str:
    """What a URL parser sees: compatibility forms folded (``①`` is ``1``, ``ⓛ`` is ``l``,
    full-width letters), ideographic full stops read as ``.``, backslashes dropped."""
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value).translate(DOTS)
    return value.replace("\\", "") if "\\" in value else value


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport.partition("]")[0] + "]"
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def _opaque_hosts(low: str) -> list[tuple[str, str]]:
    """Hosts of ``scheme:host`` and ``scheme:/host`` (no ``//``), which lenient parsers
    and redirects still follow."""
    out: list[tuple[str, str]] = []
    i = low.find(":")
    while i > 0 and len(out) < 16:
        begin = i
        while begin > 0 and low[begin - 1].isalnum():
            begin -= 1
        scheme = low[begin:i]
        rest = low[i + 1:]
        if scheme in SCHEME_SET and not rest.startswith("//"):
            rest = rest[1:] if rest.startswith("/") else rest
            end = 0
            while end < len(rest) and rest[end] not in HOST_END:
                end += 1
            out.append((scheme, _host_of(rest[:end])))
        i = low.find(":", i + 1)
    return out


def ssrf(value: str) -> str | None:
    """The first URL in ``value`` (a whole value ``scheme://...``, or one after ``=``,
    whitespace or a quote; also ``scheme:host`` without slashes) whose host is internal,
    or, in a value with a URL, an internal host after any ``@`` (parser confusion such as
    ``http://a.com &@127.0.0.1/``); the evidence is the host."""
    value = _normal(value)
    low = value.lower()
    has_url = "://" in low or low.startswith("//")
    if has_url:
        found = _slashed(value, low)
        if found:
            return found
        at = low.find("@")
        for _ in range(16):
            if at < 0:
                break
            end = at + 1
            while end < len(low) and low[end] not in HOST_END and low[end] not in ":":
                end += 1
            if internal_host(low[at + 1:end]):
                return f"@{low[at + 1:end]}"[:80]
            at = low.find("@", at + 1)
    if ":" in low:
        for scheme, host in _opaque_hosts(low):
            if internal_host(url_decode(host, plus=False)):
                return f"{scheme}:{host}"[:80]
    return None


def _slashed(value: str, low: str) -> str | None:
    start = 0
    for _ in range(16):  # at most 16 URLs per value
        i = low.find("//", start)
        if i < 0:
            return None
        begin = i
        while begin > 0 and (low[begin - 1].isalnum() or low[begin - 1] in "+-.:"):
            begin -= 1
        scheme = low[begin:i].rstrip(":")
        end = i + 2
        while end < len(low) and low[end] not in " \t\r\n\"'<>`,;|{}^\\":
            end += 1
        start = end
        if scheme and scheme not in SCHEME_SET:
            continue
        candidate = url_decode(value[i:end], plus=False)
        try:
            netloc = urlsplit(candidate).netloc
        except ValueError:
            netloc = candidate[2:].split("/", 1)[0]
        host = _host_of(netloc.rpartition("@")[2])
        if internal_host(host):
            return f"{scheme or '//'}://{host}"[:80]
    return None


# --- log4shell: ${jndi:...} through any nesting of lookups ------------------------------


def log4shell(value: str) -> str | None:
    """Resolves Log4j 2 lookups innermost first the way Log4j does (``${lower:j}`` → ``j``,
    ``${::-j}``/``${env:X:-j}`` → ``j``, unknown lookups → empty) and reports a
    ``${jndi:`` that appears. Bounded: 4096 characters, 256 resolutions."""
    if "${" not in value:
        return None
    text = value[:4096]
    for _ in range(256):
        close = text.find("}")
        while close >= 0 and text.rfind("${", 0, close) < 0:
            close = text.find("}", close + 1)
        if close < 0:
            return None
        open_ = text.rfind("${", 0, close)
        inner = text[open_ + 2:close]
        low = inner.lower().strip()
        if low.startswith(("jndi:", "jndi :")):
            return "${jndi:" + inner[5:][:24]
        if ":-" in inner:
            resolved = inner.rsplit(":-", 1)[1]
        elif low.startswith(("lower:", "upper:")):
            resolved = inner.split(":", 1)[1]
        elif low.startswith("date:"):
            resolved = inner[5:].strip("'")
        else:
            resolved = ""
        text = text[:open_] + resolved + text[close + 1:]
    return None


OPERATORS: dict[str, tuple[Operator, frozenset[str] | None]] = {
    # name: (function, gate: characters at least one of which a value needs)
    "detectSQLi": (_lazy("sqli", "detect_sqli"), SQLI_GATE),
    "detectXSS": (_lazy("xss", "detect_xss"), XSS_GATE),
    "ssrf": (ssrf, frozenset("/:")),
    "log4shell": (log4shell, frozenset("$")),
}
MODULES = {"detectSQLi": "sqli", "detectXSS": "xss"}
