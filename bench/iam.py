"""Bastion IAM policy engine vs cedarpy: decisions/s and latency for 1, 10 and 200 policies.

    .venv/bin/python bench/iam.py                 # defaults: 1, 10, 200 policies
    .venv/bin/python bench/iam.py --sizes 200 --requests 100000 --no-cedar

Both engines get the same policies (generated below; Bastion in IAM JSON, Cedar in Cedar text
parsed once into ``cedarpy.PolicySet``) and the same requests, and must reach the same decision
on every request (checked; a mismatch aborts). Each policy of the principal ``alice`` holds:

- Allow ``svcNN:Get*``/``svcNN:List*`` on ``arn:bastion:svcNN:eu-1:<acct>:thing/<i>/*``;
- Allow ``svcNN:PutThing`` on the same resources if ``aws:SourceIp`` is in 10.0.0.0/8 and
  ``aws:SecureTransport`` is true;
- Deny ``svcNN:DeleteThing`` on ``*`` unless MFA is present (``BoolIfExists``);
- every tenth policy: Allow ``svcNN:*`` on ``.../shared/*`` if ``aws:PrincipalTag/team`` is red;

over 20 services, so at 200 policies an action has ~10 policies' statements to check. Requests
mix allowed, explicitly denied and implicitly denied outcomes. Latency is measured per decision
with ``time.perf_counter_ns`` around the engine call only (request objects are prebuilt for both
engines); decisions/s is requests ÷ the wall time of the whole loop. ``gc.freeze()`` runs after
setup for both engines (long-lived compiled policies are moved out of the collector's way).
Run on an otherwise idle machine: the figures are single-threaded CPU time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.iam import PolicySet, Request, evaluate, parse_policy  # noqa: E402

ACCOUNT = "111122223333"
ALICE = f"arn:bastion:iam::{ACCOUNT}:user/alice"
SERVICES = [f"svc{n:02d}" for n in range(20)]


def iam_policy(i: int) -> dict[str, Any]:
    s = SERVICES[i % len(SERVICES)]
    things = f"arn:bastion:{s}:eu-1:{ACCOUNT}:thing/{i}/*"
    statements: list[dict[str, Any]] = [
        {"Sid": "Read", "Effect": "Allow", "Action": [f"{s}:Get*", f"{s}:List*"],
         "Resource": things},
        {"Sid": "Write", "Effect": "Allow", "Action": f"{s}:PutThing", "Resource": things,
         "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                       "Bool": {"aws:SecureTransport": "true"}}},
        {"Sid": "NoDeleteWithoutMfa", "Effect": "Deny", "Action": f"{s}:DeleteThing",
         "Resource": "*", "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}},
    ]
    if i % 10 == 0:
        statements.append(
            {"Sid": "Shared", "Effect": "Allow", "Action": f"{s}:*",
             "Resource": f"arn:bastion:{s}:eu-1:{ACCOUNT}:shared/*",
             "Condition": {"StringEquals": {"aws:PrincipalTag/team": "red"}}})
    return {"Version": "2012-10-17", "Id": f"policy-{i}", "Statement": statements}


def cedar_policy(i: int) -> str:
    """The same statements in Cedar: action and resource are context strings (the action
    lowercased: IAM actions are case-insensitive), ``like`` does the ``*`` matching."""
    s = SERVICES[i % len(SERVICES)]
    things = f"arn:bastion:{s}:eu-1:{ACCOUNT}:thing/{i}/*"
    text = f"""
@id("policy-{i}-read")
permit (principal == User::"alice", action, resource)
when {{ (context.action like "{s}:get*" || context.action like "{s}:list*")
        && context.resource like "{things}" }};
@id("policy-{i}-write")
permit (principal == User::"alice", action, resource)
when {{ context.action == "{s}:putthing" && context.resource like "{things}"
        && context has sourceIp && context.sourceIp.isInRange(ip("10.0.0.0/8"))
        && context has secureTransport && context.secureTransport == true }};
@id("policy-{i}-nodelete")
forbid (principal == User::"alice", action, resource)
when {{ context.action == "{s}:deletething"
        && (!(context has mfa) || context.mfa == false) }};
"""
    if i % 10 == 0:
        text += f"""
@id("policy-{i}-shared")
permit (principal == User::"alice", action, resource)
when {{ context.action like "{s}:*"
        && context.resource like "arn:bastion:{s}:eu-1:{ACCOUNT}:shared/*"
        && context has team && context.team == "red" }};
"""
    return text


def make_requests(n_policies: int, count: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    used = sorted({SERVICES[i % len(SERVICES)] for i in range(n_policies)})
    out = []
    for _ in range(count):
        i = rng.randrange(n_policies + 1)  # n_policies: a resource no policy names
        roll = rng.random()
        # mostly the service of policy i; sometimes another used one, or one with no policy
        s = SERVICES[i % len(SERVICES)] if roll < 0.8 else rng.choice(used + ["svc99"])
        verb = rng.choice(["GetThing", "ListThings", "PutThing", "DeleteThing", "TagThing"])
        kind = "shared" if rng.random() < 0.2 else "thing"
        resource = f"arn:bastion:{s}:eu-1:{ACCOUNT}:{kind}/{i}/item-{rng.randrange(100)}"
        context: dict[str, Any] = {
            "aws:SourceIp": rng.choice(["10.1.2.3", "10.200.0.9", "192.0.2.7"]),
            "aws:SecureTransport": rng.random() < 0.8,
            "aws:PrincipalTag/team": rng.choice(["red", "blue"]),
            "aws:username": "alice",
        }
        if rng.random() < 0.5:
            context["aws:MultiFactorAuthPresent"] = rng.random() < 0.5
        out.append((f"{s}:{verb}", resource, context))
    return out


def cedar_request(action: str, resource: str, context: dict[str, Any]) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "action": action.lower(),
        "resource": resource,
        "sourceIp": {"__extn": {"fn": "ip", "arg": context["aws:SourceIp"]}},
        "secureTransport": context["aws:SecureTransport"],
        "team": context["aws:PrincipalTag/team"],
    }
    if "aws:MultiFactorAuthPresent" in context:
        ctx["mfa"] = context["aws:MultiFactorAuthPresent"]
    return {"principal": 'User::"alice"', "action": 'Action::"call"',
            "resource": 'Resource::"r"', "context": ctx}


def measure(call: Callable[[Any], bool], inputs: list[Any]) -> tuple[list[bool], dict[str, float]]:
    for item in inputs[: min(len(inputs), 2000)]:  # warm-up (memos, caches, branch predictors)
        call(item)
    gc.collect()
    gc.freeze()
    timer = time.perf_counter_ns
    latencies = [0] * len(inputs)
    results = [False] * len(inputs)
    started = timer()
    for k, item in enumerate(inputs):
        t0 = timer()
        results[k] = call(item)
        latencies[k] = timer() - t0
    wall = timer() - started
    gc.unfreeze()
    latencies.sort()
    n = len(latencies)
    return results, {
        "per_s": n / (wall / 1e9),
        "p50": latencies[n // 2] / 1000,
        "p99": latencies[min(n - 1, int(n * 0.99))] / 1000,
        "max": latencies[-1] / 1000,
        "mean": sum(latencies) / n / 1000,
    }


def run(size: int, requests: int, use_cedar: bool, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    policy_set = PolicySet(parse_policy(iam_policy(i), policy_id=f"p{i}") for i in range(size))
    build_ms = (time.perf_counter() - t0) * 1000
    raw = make_requests(size, requests, seed)
    iam_inputs = [Request(ALICE, a, r, c) for a, r, c in raw]
    iam_results, iam_stats = measure(lambda req: evaluate(req, policy_set).allowed, iam_inputs)
    row: dict[str, Any] = {"size": size, "build_ms": build_ms, "iam": iam_stats,
                           "allowed_share": sum(iam_results) / len(iam_results)}
    if use_cedar:
        import cedarpy

        t0 = time.perf_counter()
        cedar_set = cedarpy.PolicySet.from_str("".join(cedar_policy(i) for i in range(size)))
        entities = cedarpy.Entities.from_json_str("[]")
        row["cedar_build_ms"] = (time.perf_counter() - t0) * 1000
        cedar_inputs = [cedar_request(a, r, c) for a, r, c in raw]
        cedar_results, cedar_stats = measure(
            lambda req: cedarpy.is_authorized(req, cedar_set, entities).allowed, cedar_inputs)
        mismatches = [k for k, (x, y) in enumerate(zip(iam_results, cedar_results, strict=True))
                      if x != y]
        if mismatches:
            k = mismatches[0]
            raise SystemExit(f"decision mismatch on {len(mismatches)} requests, first: "
                             f"{raw[k]} iam={iam_results[k]} cedar={cedar_results[k]}")
        row["cedar"] = cedar_stats
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 200])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--no-cedar", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    use_cedar = not args.no_cedar
    cedar_version = ""
    if use_cedar:
        try:
            from importlib.metadata import version

            import cedarpy  # noqa: F401

            cedar_version = version("cedarpy")
        except ImportError:
            print("cedarpy is not installed: .venv/bin/pip install cedarpy (running Bastion only)")
            use_cedar = False
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{requests_label(args.requests)} requests per size"
          + (f", cedarpy {cedar_version}" if use_cedar else ""))
    load_before = os.getloadavg()[0]
    rows = [run(size, args.requests, use_cedar, args.seed) for size in args.sizes]
    load_after = os.getloadavg()[0]
    print(f"1-minute load average: {load_before:.2f} before, {load_after:.2f} after "
          f"({os.cpu_count()} CPUs)")
    if max(load_before, load_after) > 1.5:
        print("WARNING: the machine was busy; latency percentiles include other processes' "
              "CPU use")

    head = "| policies | engine | decisions/s | mean µs | p50 µs | p99 µs | max µs | build ms |"
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for row in rows:
        engines = [("bastion", row["iam"], row["build_ms"])]
        if "cedar" in row:
            engines.append(("cedarpy", row["cedar"], row["cedar_build_ms"]))
        for name, s, build in engines:
            print(f"| {row['size']} | {name} | {s['per_s']:,.0f} | {s['mean']:.1f} | "
                  f"{s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.0f} | {build:.1f} |")
    if use_cedar:
        print()
        print("| policies | allowed share | throughput ratio (bastion ÷ cedarpy) | "
              "p99 ratio (cedarpy ÷ bastion) |")
        print("|---|---|---|---|")
        for row in rows:
            print(f"| {row['size']} | {row['allowed_share']:.0%} | "
                  f"{row['iam']['per_s'] / row['cedar']['per_s']:.2f} | "
                  f"{row['cedar']['p99'] / row['iam']['p99']:.2f} |")
        print("\nDecisions agreed on every request.")
    target = next((r for r in rows if r["size"] == 200), None)
    if target:
        ok = target["iam"]["per_s"] >= 50_000 and target["iam"]["p99"] < 20
        print(f"\nTarget at 200 policies (>= 50,000 decisions/s, p99 < 20 µs): "
              f"{'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def requests_label(n: int) -> str:
    return f"{n:,}"


if __name__ == "__main__":
    main()
