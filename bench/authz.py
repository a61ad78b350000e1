"""The authorization micro-benchmark: `PolicyAuthorizer.decide` at enterprise size, in one process.

Run as `python -m bench.authz`: 1,000 roles holding 10,000 permissions, 100 ABAC policies and 2,000
workflows; prints p50/p99 per decision and writes bench/results/authz.json. Unlike `python -m bench`
it imports nexus itself. Decisions with known answers are checked first, so it cannot time a no-op.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nexus.assembly import build_authorizer
from nexus.core.authorization import Authorizer
from nexus.core.policy.decision import PolicyAuthorizer
from nexus.core.policy.permission import CHANNEL_WORDS, CHANNELS
from nexus.core.telemetry import SystemClock
from nexus.core.types import Decision, Invocation, Principal, WorkflowInfo
from nexus.enterprise.authz import ABACPolicyEngine, RBACManager
from nexus.settings import Authz
from nexus.testing.authz import question

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "authz.json"
TARGET_P50_US = 20.0
DOMAINS = ("finance", "sales", "hr", "ops", "legal", "research", "support", "marketing", "security", "data")
KINDS = ("reports", "exports", "etl", "alerts", "tools", "sync", "audit", "billing")
TITLES = ("viewer", "analyst", "operator", "engineer", "lead", "auditor")
LOCATIONS = ("US", "EU", "APAC", "LATAM")
SURFACES = ("health", "resources", "authz")
BLOCKED = ("203.0.113.66", "203.0.113.67")
CLEAN_ADDRESS = "192.0.2.10"
# A Wednesday, 12:00 in Paris: every run sees the same allow/deny mix, whatever the hour.
PINNED = datetime.datetime(2025, 1, 15, 11, 0, tzinfo=datetime.UTC)

# What a channel hands the decision point: the call as an Invocation, and the workflow looked up.
Request = tuple[Invocation, WorkflowInfo | None]


def request(
    principal: Principal,
    channel: str,
    action: str,
    workflow: WorkflowInfo | None,
    surface: str | None,
    address: str,
) -> Request:
    return question(principal, channel, action, workflow, surface=surface, client_addr=address), workflow


def ask(authorizer: Authorizer, *asked: Any) -> Decision:
    """Decide for (principal, channel, action, workflow, surface, address), as a channel asks."""
    call, workflow = request(*asked)
    return authorizer.decide(call, workflow)


@dataclass(frozen=True, slots=True)
class Sizes:
    roles: int = 1_000
    permissions: int = 10_000
    policies: int = 100
    targets: int = 2_000
    principals: int = 600
    role_sets: int = 300
    decisions: int = 200_000
    uniform_decisions: int = 50_000
    cold_rounds: int = 200
    cold_decisions: int = 100


SMALL = Sizes(40, 400, 12, 60, 30, 15, 2_000, 500, 5, 20)


class ShiftedClock:
    """The system clock, read on every call (so its cost is counted), shifted to start at PINNED."""

    def __init__(self) -> None:
        self.shift = PINNED - datetime.datetime.now(datetime.UTC)

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self.shift


class CheckFailedError(AssertionError):
    """A decision with a known answer came out otherwise: the timings would mean nothing."""


@dataclass
class World:
    rbac: RBACManager
    abac: ABACPolicyEngine
    authorizer: Authorizer
    targets: list[WorkflowInfo]
    by_name: dict[str, list[WorkflowInfo]]
    principals: list[Principal]
    sentinels: dict[str, Any]


# -- the world ---------------------------------------------------------------------------------------


def tag_pool() -> list[str]:
    return [f"{d}_{k}" for d in DOMAINS for k in KINDS] + [f"team:{d}" for d in DOMAINS]


def make_targets(rng: random.Random, count: int) -> list[WorkflowInfo]:
    tags = tag_pool()
    targets = []
    for i in range(count):
        domain, kind = DOMAINS[i % len(DOMAINS)], rng.choice(KINDS)
        own = [f"{domain}_{kind}", *rng.sample(tags, rng.randint(0, 2))]
        if rng.random() < 0.5:
            own.append(f"team:{domain}")
        attributes = {
            "classification_level": rng.choices(range(5), weights=(30, 30, 20, 12, 8))[0],
            "department": domain,
            "pii": rng.random() < 0.15,
        }
        name = f"{domain}_{kind}_{i:04d}"
        targets.append(WorkflowInfo(name, None, tuple(dict.fromkeys(own)), {}, attributes))
    return targets


def _permission(rng: random.Random, local: Sequence[WorkflowInfo], targets: Sequence[WorkflowInfo]) -> str:
    """One permission of a role: mostly its own domain's (`local`) workflows and tags, some wildcards."""
    channel, r = rng.choice(CHANNELS), rng.random()
    tag = rng.choice(rng.choice(local).tags)
    if r < 0.45:
        return f"{channel}:execute:{rng.choice(local).name}"
    if r < 0.60:
        return f"{channel}:{rng.choice(('read', 'execute'))}:{tag}"
    if r < 0.70:
        return f"{channel}:*:{tag}"
    if r < 0.80:
        return f"*:execute:{rng.choice(local).name}"
    if r < 0.87:
        return f"{channel}:read:{CHANNEL_WORDS[channel]}"
    if r < 0.94:
        return f"{channel}:execute:{rng.choice(targets).name}"
    if r < 0.995:
        return f"{channel}:read:{rng.choice(SURFACES)}"
    return f"{channel}:execute:*"


def make_roles(
    rng: random.Random, roles: int, permissions: int, targets: Sequence[WorkflowInfo]
) -> RBACManager:
    """`roles` roles holding `permissions` permissions in all; about 30% inherit a role."""
    counts = [permissions // roles] * roles
    counts[0] += permissions - sum(counts)
    for _ in range(roles):  # uneven role sizes, same total
        i, j = rng.randrange(roles), rng.randrange(roles)
        moved = rng.randint(0, min(counts[i] - 1, 6)) if counts[i] > 1 else 0
        counts[i], counts[j] = counts[i] - moved, counts[j] + moved
    by_domain = {d: [t for t in targets if t.attributes["department"] == d] or targets for d in DOMAINS}
    rbac = RBACManager()
    names: list[str] = []
    for i, count in enumerate(counts):
        domain = DOMAINS[i % len(DOMAINS)]
        earlier = names[i % len(DOMAINS) :: len(DOMAINS)]
        inherits = [rng.choice(earlier)] if earlier and rng.random() < 0.3 else []
        name = f"{domain}-{rng.choice(TITLES)}-{i:03d}"
        granted = [_permission(rng, by_domain[domain], targets) for _ in range(count)]
        rbac.create_role(name, granted, inherits=inherits)
        names.append(name)
    return rbac


GLOBAL_POLICIES: dict[str, dict[str, Any]] = {
    "service_hours": {"condition": "current_time between 05:00 and 23:00", "effect": "permit"},
    "blocked_addresses": {"condition": f"client_address in {list(BLOCKED)}", "effect": "deny"},
    "mcp_weekdays": {
        "condition": "current_day in ['monday', 'tuesday', 'wednesday', 'thursday', 'friday']",
        "channels": ["mcp"],
        "resources": ["tools"],
        "effect": "permit",
    },
}


def _condition(rng: random.Random, roles: Sequence[str]) -> tuple[str, str]:
    """A condition in one of the document's three forms or a relative, and its effect."""
    forms: list[Callable[[], tuple[str, str]]] = [
        lambda: (f"current_time between {rng.randint(6, 9):02d}:00 and {rng.randint(17, 20)}:00", "permit"),
        lambda: ("current_time between 22:00 and 05:00", "permit"),
        lambda: (f"user.location in {sorted(rng.sample(LOCATIONS, 3))}", "permit"),
        lambda: ("user.clearance_level >= resource.classification_level", "permit"),
        lambda: (f"resource.classification_level <= {rng.randint(2, 4)}", "permit"),
        lambda: ("user.department == resource.department or user.clearance_level >= 4", "permit"),
        lambda: ("resource.pii == true and user.location not in ['EU']", "deny"),
        lambda: ("current_day in ['saturday', 'sunday']", "deny"),
        lambda: ("channel != 'mcp' or user.clearance_level >= 3", "permit"),
        lambda: (f"'{rng.choice(roles)}' in user.roles or resource.classification_level <= 2", "permit"),
    ]
    weights = (14, 1, 12, 14, 10, 10, 8, 6, 8, 8)
    return rng.choices(forms, weights=weights)[0]()


def make_policies(
    rng: random.Random, count: int, targets: Sequence[WorkflowInfo], roles: Sequence[str]
) -> ABACPolicyEngine:
    """The global policies, then policies over a few tags or workflow names each."""
    abac = ABACPolicyEngine(time_zone="Europe/Paris", clock=ShiftedClock())
    for name, fixed in GLOBAL_POLICIES.items():
        abac.add_policy(name, fixed)
    tags = tag_pool()
    for i in range(count - len(GLOBAL_POLICIES)):
        condition, effect = _condition(rng, roles)
        r = rng.random()
        if r < 0.75:
            resources = rng.sample(tags[:-10], rng.randint(1, 3))
        elif r < 0.9:
            resources = [t.name for t in rng.sample(list(targets), rng.randint(1, 3))]
        else:
            resources = [rng.choice(tags[-10:])]
        spec: dict[str, Any] = {"condition": condition, "resources": resources, "effect": effect}
        if rng.random() < 0.6:
            spec["channels"] = sorted(rng.sample(CHANNELS, rng.randint(1, 2)))
        if rng.random() < 0.25:
            spec["actions"] = ["execute"]
        abac.add_policy(f"policy_{i:03d}", spec)
    return abac


def make_principals(rng: random.Random, sizes: Sizes, rbac: RBACManager) -> list[Principal]:
    """API-key-like principals over `sizes.role_sets` role sets of 1-5 roles; most carry the
    attributes an identity provider would give (clearance_level, location, department)."""
    names = [role.name for role in rbac.roles()]
    role_sets = []
    for _ in range(sizes.role_sets):
        domain = rng.choice(DOMAINS)
        local = [n for n in names if n.startswith(f"{domain}-")] or names
        picked = rng.sample(local, min(len(local), rng.randint(1, 4)))
        picked += rng.sample(names, 1) if rng.random() < 0.3 else []
        role_sets.append(frozenset(picked))
    principals = []
    for i in range(sizes.principals):
        roles = role_sets[i % len(role_sets)]
        attributes: dict[str, Any] = {"name": f"key-{i:04d}"}
        if rng.random() < 0.9:
            clearance = rng.choices(range(6), weights=(5, 10, 20, 25, 25, 15))[0]
            location = rng.choices(LOCATIONS, weights=(45, 35, 15, 5))[0]
            department = min(roles).split("-")[0]
            attributes |= {"clearance_level": clearance, "location": location, "department": department}
        principal_id = f"k{i:05d}"
        if rng.random() < 0.2:  # some roles are assigned to the key id, not carried by the key
            rbac.assign_role(rng.choice(names), api_key=principal_id)
        principals.append(
            Principal(f"key:{principal_id}", "api_key", roles, attributes, name=attributes["name"])
        )
    return principals


def build_world(sizes: Sizes, seed: int = 7) -> World:
    """The roles, policies, targets and principals, the sentinels, and the authorizer the app builds."""
    rng = random.Random(seed)
    targets = make_targets(rng, sizes.targets)
    # The sentinels count towards the totals: 1,000 roles and 10,000 permissions in all.
    sentinel_permissions = sum(len(p) for p in SENTINEL_ROLES.values())
    rbac = make_roles(
        rng, sizes.roles - len(SENTINEL_ROLES) - 1, sizes.permissions - sentinel_permissions, targets
    )
    abac = make_policies(rng, sizes.policies - SENTINEL_POLICIES, targets, [r.name for r in rbac.roles()])
    principals = make_principals(rng, sizes, rbac)
    sentinels = add_sentinels(rbac, abac)
    by_name: dict[str, list[WorkflowInfo]] = {}  # a workflow name or a tag: the workflows it names
    for target in targets:
        for name in (target.name, *target.tags):
            by_name.setdefault(name, []).append(target)
    authorizer = build_authorizer(Authz(rbac, abac), SystemClock())  # as the app does at start()
    return World(rbac, abac, authorizer, targets, by_name, principals, sentinels)


# -- decisions with known answers -----------------------------------------------------------------------

SENTINEL_ROLES = {
    "sentinel-runner": ["api:execute:sentinel_open", "mcp:*:sentinel_tools", "api:execute:sentinel_frozen"],
    "sentinel-parent": ["cli:execute:sentinel_chain"],
    "sentinel-classified": ["*:execute:sentinel_classified"],
    "sentinel-churn": ["api:execute:sentinel_churn"],
    "sentinel-idle": ["cli:read:health"],
}
SENTINEL_POLICIES = 2
SENTINEL_TARGETS = {
    "sentinel_open": ("sentinel_tools",),
    "sentinel_chain": ("sentinel_chain",),
    "sentinel_secret": ("sentinel_classified",),
    "sentinel_frozen": ("sentinel_frozen",),
    "sentinel_churn": (),
}


def add_sentinels(rbac: RBACManager, abac: ABACPolicyEngine) -> dict[str, Any]:
    """Roles, workflows, policies and principals no random part touches, so their answers are known."""
    for name, permissions in SENTINEL_ROLES.items():
        rbac.create_role(name, permissions)
    rbac.create_role("sentinel-child", inherits=["sentinel-parent"])
    abac.add_policy(
        "sentinel_clearance",
        {
            "condition": "user.clearance_level >= resource.classification_level",
            "resources": ["sentinel_classified"],
            "effect": "permit",
        },
    )
    abac.add_policy(
        "sentinel_freeze",
        {"condition": "resource.frozen == true", "resources": ["sentinel_frozen"], "effect": "deny"},
    )
    s: dict[str, Any] = {}
    for name, tags in SENTINEL_TARGETS.items():
        attributes = {"classification_level": 4 if name == "sentinel_secret" else 0}
        s[name] = WorkflowInfo(name, None, tags, {}, {**attributes, "frozen": name == "sentinel_frozen"})

    def key(name: str, roles: set[str], clearance: int = 0) -> Principal:
        attributes = {"name": name, "clearance_level": clearance, "location": "EU"}
        return Principal(f"key:{name}", "api_key", frozenset(roles), attributes, name=name)

    s["runner"] = key("sentinel-runner", {"sentinel-runner"})
    s["child"] = key("sentinel-child", {"sentinel-child"})
    s["cleared"] = key("sentinel-cleared", {"sentinel-classified"}, clearance=5)
    s["uncleared"] = key("sentinel-uncleared", {"sentinel-classified"}, clearance=2)
    s["nobody"] = key("sentinel-nobody", {"sentinel-idle"})
    s["churn"] = key("sentinel-churn", set())
    return s


# Who asks, on which channel, to do what, to which workflow, from where; allowed?; a word of the reason.
SENTINEL_CASES = (
    ("runner", "api", "execute", "sentinel_open", CLEAN_ADDRESS, True, "'sentinel-runner' grants"),
    ("runner", "cli", "execute", "sentinel_open", CLEAN_ADDRESS, False, "no permission"),
    ("runner", "mcp", "read", "sentinel_open", CLEAN_ADDRESS, True, "'mcp:*:sentinel_tools'"),
    ("runner", "mcp", "execute", "sentinel_open", CLEAN_ADDRESS, True, "policy 'mcp_weekdays'"),
    ("child", "cli", "execute", "sentinel_chain", CLEAN_ADDRESS, True, "'sentinel-parent' grants"),
    ("cleared", "mcp", "execute", "sentinel_secret", CLEAN_ADDRESS, True, "'sentinel_clearance' (permit)"),
    ("uncleared", "api", "execute", "sentinel_secret", CLEAN_ADDRESS, False, "'sentinel_clearance'"),
    ("runner", "api", "execute", "sentinel_frozen", CLEAN_ADDRESS, False, "'sentinel_freeze' (deny) held"),
    ("runner", "api", "execute", "sentinel_open", BLOCKED[0], False, "'blocked_addresses'"),
    ("nobody", "api", "read", "sentinel_open", CLEAN_ADDRESS, False, "no permission"),
)


def _expect(decision: Decision, allowed: bool, says: str, what: str) -> None:
    if decision.allowed is not allowed or says not in decision.reason:
        raise CheckFailedError(f"{what}: expected allowed={allowed} saying {says!r}, got {decision}")


def check_sentinels(world: World) -> int:
    """Decide the sentinel cases; raise `CheckFailedError` on any wrong answer. The count checked."""
    s = world.sentinels
    for who, channel, action, target, address, allowed, says in SENTINEL_CASES:
        decision = ask(world.authorizer, s[who], channel, action, s[target], None, address)
        _expect(decision, allowed, says, f"{who} {channel}:{action} on {target} from {address}")
    hidden = ask(world.authorizer, s["nobody"], "api", "execute", s["sentinel_open"], None, CLEAN_ADDRESS)
    if hidden.visible:
        raise CheckFailedError(f"a workflow the caller may not read is visible: {hidden}")
    check_churn(world, assigned=False)
    return len(SENTINEL_CASES) + 2


def check_churn(world: World, *, assigned: bool) -> None:
    """The churn key may run its workflow exactly while its role is assigned (cache invalidation)."""
    s = world.sentinels
    decision = ask(world.authorizer, s["churn"], "api", "execute", s["sentinel_churn"], None, CLEAN_ADDRESS)
    _expect(decision, assigned, "", f"after its role was {'assigned' if assigned else 'taken back'}")


# -- the request mix -------------------------------------------------------------------------------------


class Mix:
    """Requests as traffic looks: popular keys call more, mostly what their roles allow them to."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world, self.rng = world, rng
        self.addresses = [f"10.0.{i // 8}.{i % 8 + 1}" for i in range(50)]
        self.weights = [1 / (i + 1) ** 0.8 for i in range(len(world.principals))]
        self.permissions: dict[frozenset[str], list[tuple[str, str, str]]] = {}

    def requests(self, count: int, *, uniform: bool = False) -> list[Request]:
        world, rng = self.world, self.rng
        if uniform:
            principals = rng.choices(world.principals, k=count)
        else:
            principals = rng.choices(world.principals, weights=self.weights, k=count)
        return [
            self._uniform(p) if uniform or rng.random() < 0.15 else self._plausible(p) for p in principals
        ]

    def _address(self) -> str:
        return self.rng.choice(BLOCKED) if self.rng.random() < 0.02 else self.rng.choice(self.addresses)

    def _uniform(self, principal: Principal) -> Request:
        rng = self.rng
        channel, action = rng.choice(CHANNELS), rng.choice(("execute", "read"))
        return request(principal, channel, action, rng.choice(self.world.targets), None, self._address())

    def _plausible(self, principal: Principal) -> Request:
        """A request one of the principal's own permissions is about (policies may still deny it)."""
        rng, world = self.rng, self.world
        held = self._held(principal)
        if not held:
            return self._uniform(principal)
        channel, action, resource = rng.choice(held)
        channel = rng.choice(CHANNELS) if channel == "*" else channel
        action = rng.choice(("execute", "execute", "read")) if action == "*" else action
        if resource in ("health", "authz"):
            return request(principal, channel, "read", None, resource, self._address())
        surface = "resources" if resource == "resources" else None
        pool = world.by_name.get(resource) or world.targets
        return request(principal, channel, action, rng.choice(pool), surface, self._address())

    def _held(self, principal: Principal) -> list[tuple[str, str, str]]:
        book = self.world.rbac.book
        roles = book.roles_of(principal)
        found = self.permissions.get(roles)
        if found is None:
            held = [book.get(name) for name in sorted(roles)]
            found = [(p.channel, p.action, p.resource) for r in held if r for p in r.permissions]
            self.permissions[roles] = found
        return found


# -- timing ----------------------------------------------------------------------------------------------


def time_decisions(authorizer: Authorizer, requests: Sequence[Request]) -> list[int]:
    """Each decision's duration in nanoseconds (perf_counter_ns around the one call)."""
    clock, decide = time.perf_counter_ns, authorizer.decide
    durations = [0] * len(requests)
    for i, (call, workflow) in enumerate(requests):
        start = clock()
        decide(call, workflow)
        durations[i] = clock() - start
    return durations


def time_cold(world: World, mix: Mix, sizes: Sizes) -> list[int]:
    """Decisions right after each role change: the role set caches are dropped on every round."""
    durations: list[int] = []
    churn_key = world.sentinels["churn"].id.removeprefix("key:")
    for round_ in range(sizes.cold_rounds):
        assigned = round_ % 2 == 0
        change = world.rbac.assign_role if assigned else world.rbac.unassign_role
        change("sentinel-churn", api_key=churn_key)
        durations += time_decisions(world.authorizer, mix.requests(sizes.cold_decisions))
        check_churn(world, assigned=assigned)
    world.rbac.unassign_role("sentinel-churn", api_key=churn_key)
    return durations


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    decisions: int
    p50_us: float
    p99_us: float
    mean_us: float
    per_s: float
    target: str = "-"
    status: str = "-"


def summarize(key: str, label: str, durations: Sequence[int], *, verdict: bool = False) -> Row:
    ordered = sorted(durations)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1000

    mean = sum(ordered) / len(ordered) / 1000
    p50 = at(0.50)
    status = ("pass" if p50 < TARGET_P50_US else "MISS") if verdict else "-"
    target = f"p50 < {TARGET_P50_US:g} us" if verdict else "-"
    return Row(key, label, len(ordered), p50, at(0.99), mean, 1e6 / mean, target, status)


def outcome_shares(authorizer: Authorizer, requests: Sequence[Request]) -> dict[str, float]:
    """What the mix decided: allowed, denied by roles, denied by a policy (each a share of 1)."""
    counts = {"allowed": 0, "denied_by_roles": 0, "denied_by_policy": 0}
    for call, workflow in requests:
        decision = authorizer.decide(call, workflow)
        if decision.allowed:
            counts["allowed"] += 1
        elif decision.reason.startswith("denied: policy"):
            counts["denied_by_policy"] += 1
        else:
            counts["denied_by_roles"] += 1
    return {name: count / len(requests) for name, count in counts.items()}


def mean_applicable(world: World, requests: Sequence[Request]) -> float:
    """Policies that apply to an average request of the mix (what ABAC evaluates per decision)."""
    policies = world.abac.policies
    counts = [0]
    for call, workflow in requests:
        if workflow is not None and isinstance(world.authorizer, PolicyAuthorizer):
            keys = world.authorizer.target(call.channel, workflow, call.surface).keys
            counts.append(len(policies.applicable(call.channel, call.action, keys)))
    return sum(counts) / max(1, len(counts) - 1)


# -- the run ---------------------------------------------------------------------------------------------


def run(sizes: Sizes, *, seed: int = 7, profile: bool = False) -> dict[str, Any]:
    """Build, check, time the three scenarios, check again; the report as JSON-ready data."""
    started = time.perf_counter()
    world = build_world(sizes, seed)
    built_s = time.perf_counter() - started
    checked = check_sentinels(world)
    mix = Mix(world, random.Random(seed + 1))
    requests = mix.requests(sizes.decisions)
    shares = outcome_shares(world.authorizer, requests)  # also the warm-up pass
    if min(shares.values()) < 0.01:
        raise CheckFailedError(f"the mix does not exercise every path of a decision: {shares}")
    gc.collect()
    warm = time_decisions(world.authorizer, requests)
    if profile:
        _profile(world.authorizer, requests)
    uniform = time_decisions(world.authorizer, mix.requests(sizes.uniform_decisions, uniform=True))
    cold = time_cold(world, mix, sizes)
    checked += check_sentinels(world)
    rows = [
        summarize("warm", "warm caches, realistic mix", warm, verdict=True),
        summarize("uniform", "uniform random requests (mostly denied)", uniform),
        summarize("cold", "first decisions after each role change", cold),
    ]
    setup = {
        **asdict(sizes),
        "roles_defined": len(world.rbac.roles()),
        "permissions_defined": sum(len(r.permissions) for r in world.rbac.roles()),
        "policies_defined": len(world.abac.policies),
        "distinct_role_sets": len({p.roles for p in world.principals}),
        "mean_applicable_policies": round(mean_applicable(world, requests[:20_000]), 2),
        "build_s": round(built_s, 2),
        "checked_decisions": checked,
    }
    return {"rows": [asdict(row) for row in rows], "setup": setup, "mix": shares}


def _profile(authorizer: Authorizer, requests: Sequence[Request]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(time_decisions, authorizer, requests)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)


def render(report: dict[str, Any]) -> str:
    headers = ("scenario", "decisions", "p50", "p99", "mean", "decisions/s", "target", "result")
    cells = [headers] + [
        (
            r["label"],
            f"{r['decisions']:,}",
            f"{r['p50_us']:.1f} us",
            f"{r['p99_us']:.1f} us",
            f"{r['mean_us']:.1f} us",
            f"{r['per_s']:,.0f}",
            r["target"],
            r["status"],
        )
        for r in report["rows"]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s, mix = report["setup"], report["mix"]
    lines.append(
        f"setup: {s['roles_defined']:,} roles, {s['permissions_defined']:,} permissions, "
        f"{s['policies_defined']} policies, {s['targets']:,} workflows, {s['principals']} keys over "
        f"{s['distinct_role_sets']} role sets; {s['mean_applicable_policies']} policies apply per decision; "
        f"built in {s['build_s']} s; {s['checked_decisions']} known decisions checked"
    )
    lines.append(
        "mix: "
        + ", ".join(f"{name.replace('_', ' ')} {share:.0%}" for name, share in mix.items())
        + "; one thread, decisions/s = 1 / mean"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.authz", description=__doc__)
    parser.add_argument("--small", action="store_true", help="a tiny world and few decisions (a smoke run)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the warm run, top 25 by own time")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(SMALL if args.small else Sizes(), seed=args.seed, profile=args.profile)
    report["meta"] = {
        "command": " ".join(["python -m bench.authz", *(sys.argv[1:] if argv is None else argv)]),
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}",
    }
    print(render(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
