"""Global condition context keys (AWS "AWS global condition context keys", plus Bastion's own).

The engine treats every key the same way: a key is just an entry in ``Request.context`` that the
caller fills. These lists only feed validation (``UNKNOWN_GLOBAL_CONDITION_KEY``): a key with the
``aws:`` prefix that is neither listed here nor starts with one of the tag prefixes is probably a
typo, which silently makes a condition false (or, with a negated operator, true).
"""

from __future__ import annotations

GLOBAL_CONDITION_KEYS: frozenset[str] = frozenset(
    {
        # Principal properties
        "aws:principalarn",
        "aws:principalaccount",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principaltype",
        "aws:principalisawsservice",
        "aws:principalservicename",
        "aws:principalservicenameslist",
        "aws:userid",
        "aws:username",
        "aws:sourceidentity",
        "aws:federatedprovider",
        "aws:tokenissuetime",
        "aws:multifactorauthpresent",
        "aws:multifactorauthage",
        "aws:assumedroot",
        # Network properties
        "aws:sourceip",
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:vpcsourceip",
        "aws:securetransport",
        "aws:referer",
        "aws:useragent",
        # Request properties
        "aws:currenttime",
        "aws:epochtime",
        "aws:requestedregion",
        "aws:tagkeys",
        "aws:calledvia",
        "aws:calledviafirst",
        "aws:calledvialast",
        "aws:viaawsservice",
        # Resource and cross-service properties
        "aws:resourceaccount",
        "aws:resourceorgid",
        "aws:resourceorgpaths",
        "aws:sourcearn",
        "aws:sourceaccount",
        "aws:sourceorgid",
        "aws:sourceorgpaths",
        "aws:sourceowner",
        "aws:ec2instancesourcevpc",
        "aws:ec2instancesourceprivateipv4",
        # Bastion
        "bastion:clientid",
        "bastion:scope",
        "bastion:mtlsspiffeid",
    }
)

#: Keys that take a user-chosen suffix (``aws:PrincipalTag/Dept``), lowercase.
GLOBAL_CONDITION_KEY_PREFIXES: tuple[str, ...] = (
    "aws:principaltag/",
    "aws:requesttag/",
    "aws:resourcetag/",
)

#: Multi-valued global keys (AWS "Single-valued vs. multivalued context keys").
MULTIVALUED_KEYS: frozenset[str] = frozenset(
    {
        "aws:principalorgpaths",
        "aws:principalservicenameslist",
        "aws:tagkeys",
        "aws:calledvia",
        "aws:resourceorgpaths",
        "aws:sourceorgpaths",
        "bastion:scope",
    }
)


def is_known_global_key(key: str) -> bool:
    low = key.lower()
    return low in GLOBAL_CONDITION_KEYS or low.startswith(GLOBAL_CONDITION_KEY_PREFIXES)
