"""Authorization edge cases found in review: hidden-means-unusable, stale caches, malformed role
documents, drafts, explain fidelity, refused managers; plus coverage the other suites lack.

Memory backends and a fake clock only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from tests.unit.core.policy.asking import ask, deciding

from nexus import Nexus
from nexus.assembly import build_authorizer
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore, MemoryUserStore
from nexus.core.audit import Auditor
from nexus.core.auth.model import User
from nexus.core.authorization import AllowAll, Authorizer
from nexus.core.catalog import Catalog
from nexus.core.identity import ApiKeyAuthenticator, new_api_key
from nexus.core.pipeline import ALL_WORKFLOWS, Pipeline
from nexus.core.policy.abac import PolicySet
from nexus.core.policy.decision import PolicyAuthorizer
from nexus.core.policy.explain import Explainer, ExplainQuery
from nexus.core.policy.permission import RESOURCES_SURFACE
from nexus.core.policy.rbac import RoleBook
from nexus.core.ratelimit import NoLimit
from nexus.core.telemetry import NoopMeter
from nexus.core.types import (
    ANONYMOUS,
    Action,
    Channel,
    Credential,
    Decision,
    Invocation,
    Outcome,
    Principal,
    WorkflowInfo,
)
from nexus.enterprise.authz import ABACPolicyEngine, RBACManager
from nexus.errors import ConfigurationError, InternalError, InvalidInputError
from nexus.settings import Authz
from nexus.testing.clock import FakeClock
from nexus.workflow import AsyncLocalRuntime, Workflow, WorkflowBuilder

TEN_AM = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def info(name: str, *tags: str, **attributes: Any) -> WorkflowInfo:
    return WorkflowInfo(name, None, tags, MappingProxyType({}), MappingProxyType(attributes))


def who(*roles: str, name: str = "ann", **attributes: Any) -> Principal:
    return Principal(id="u1", kind="password", roles=frozenset(roles), attributes=attributes, name=name)


def one_node() -> Workflow:
    return WorkflowBuilder().add_node("PythonCodeNode", "n", {"code": "result = 1"}).build()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TEN_AM)


# -- visibility --------------------------------------------------------------------------------------


def test_a_workflow_hidden_by_a_read_policy_cannot_be_run_either(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("ops", ["api:*:payroll"])
    policies = PolicySet()
    policies.add("boss_only", {"condition": "user.name == 'boss'", "effect": "permit", "actions": ["read"]})
    decide = deciding(PolicyAuthorizer(book, policies, clock, UTC))
    payroll = info("payroll")
    read = decide(who("ops"), "api", "read", payroll)
    assert (read.allowed, read.visible) == (False, False)  # absent from listings, describe is 404
    # README: a workflow the caller may not read is invisible, "a call to it answers not found".
    run = decide(who("ops"), "api", "execute", payroll)
    assert (run.allowed, run.visible) == (False, False)


@dataclass
class Rig:
    pipeline: Pipeline
    sink: MemoryAuditSink
    token: str

    def invocation(self, channel: Channel, workflow: str, surface: str | None = None) -> Invocation:
        return Invocation(
            "req-1",
            channel,
            workflow,
            {},
            Credential("bearer", self.token),
            "10.0.0.7",
            action=Action.READ,
            surface=surface,
        )


async def make_rig(authorizer: Authorizer, roles: list[str], clock: FakeClock) -> Rig:
    catalog = Catalog()
    catalog.register("payroll", one_node(), tags=["finance"])
    catalog.register("ledger", one_node())
    keys = MemoryKeyStore()
    issued = new_api_key("ci", roles, clock)
    await keys.add(issued.key)
    sink = MemoryAuditSink()
    pipeline = Pipeline(
        catalog=catalog,
        authenticator=ApiKeyAuthenticator(keys, clock, cache_ttl_s=0),
        authorizer=authorizer,
        limiter=NoLimit(),
        auditor=Auditor(sink, clock),
        meter=NoopMeter(),
        clock=clock,
        runtime=AsyncLocalRuntime(),
    )
    return Rig(pipeline, sink, issued.plaintext)


async def test_resources_list_shows_the_workflows_a_caller_may_read_as_resources(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("finance", ["mcp:read:finance"])
    rig = await make_rig(PolicyAuthorizer(book, None, clock, UTC), ["finance"], clock)
    # Reading one of them as a resource is allowed...
    described = await rig.pipeline.describe(rig.invocation(Channel.MCP, "payroll", RESOURCES_SURFACE))
    assert described.name == "payroll"
    # ...so, like tools/list, the listing shows it rather than refusing the whole list.
    listed = await rig.pipeline.list_workflows(rig.invocation(Channel.MCP, ALL_WORKFLOWS, RESOURCES_SURFACE))
    assert [w.name for w in listed] == ["payroll"]


async def test_tools_list_shows_only_the_workflows_the_caller_may_read(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("finance", ["mcp:execute:finance"])
    rig = await make_rig(PolicyAuthorizer(book, None, clock, UTC), ["finance"], clock)
    listed = await rig.pipeline.list_workflows(rig.invocation(Channel.MCP, ALL_WORKFLOWS))
    assert [w.name for w in listed] == ["payroll"]


class ExplodingAuthorizer:
    """An authorizer that fails (a bug, a broken policy store): the call must fail closed."""

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        raise RuntimeError("the policy store is gone")


async def test_an_authorizer_that_raises_fails_the_call_closed_and_audits_it(clock: FakeClock) -> None:
    rig = await make_rig(ExplodingAuthorizer(), [], clock)
    with pytest.raises(InternalError):
        await rig.pipeline.describe(rig.invocation(Channel.API, "payroll"))
    with pytest.raises(InternalError):
        await rig.pipeline.list_workflows(rig.invocation(Channel.API, ALL_WORKFLOWS))
    records = await rig.sink.query(limit=10)
    assert [r.outcome for r in records] == [Outcome.ERROR, Outcome.ERROR]


# -- caches and principals ---------------------------------------------------------------------------


def test_the_cached_rbac_part_never_carries_one_callers_policy_outcome_to_another(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("dev", ["api:*:workflows"])
    policies = PolicySet()
    policies.add("eu_only", {"condition": "user.location == 'EU'", "effect": "permit"})
    decide = deciding(PolicyAuthorizer(book, policies, clock, UTC))
    target = info("deploy")
    assert decide(who("dev", location="EU"), "api", "execute", target).allowed
    assert not decide(who("dev", location="US"), "api", "execute", target).allowed
    assert decide(who("dev", location="EU", name="bob"), "api", "execute", target).allowed


def test_identity_attributes_cannot_pose_as_the_effective_roles_or_the_id(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("dev", ["api:*:workflows"])
    policies = PolicySet()
    policies.add("admins", {"condition": "'admin' in user.roles or user.id == 'root'", "effect": "permit"})
    decide = deciding(PolicyAuthorizer(book, policies, clock, UTC))
    # A directory attribute or claim named "roles" or "id" is overridden by the real ones.
    forged = who("dev", roles=["admin"], id="root")
    assert not decide(forged, "api", "execute", info("deploy")).allowed


def test_a_group_given_as_one_string_is_one_group_and_other_shapes_are_no_group() -> None:
    book = RoleBook()
    book.define("ops", ["cli:execute:deploy"])
    book.assign("ops", group="sre")
    assert book.roles_of(who(groups="sre")) == {"ops"}
    assert book.roles_of(who(groups=("dev", "sre"))) == {"ops"}
    assert book.roles_of(who(groups={"sre": True})) == set()


def test_the_anonymous_caller_holds_no_role_assigned_to_a_user_named_anonymous() -> None:
    book = RoleBook()
    book.define("ops", ["api:*:*"])
    book.assign("ops", user="anonymous")
    assert book.roles_of(ANONYMOUS) == set()


def test_assignments_change_the_next_decision_for_a_principal_already_cached(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("ops", ["api:execute:deploy"])
    authorizer = PolicyAuthorizer(book, None, clock, UTC)
    target = info("deploy")
    assert not ask(authorizer, who(), "api", "execute", target).visible
    book.assign("ops", user="ann")
    assert ask(authorizer, who(), "api", "execute", target).allowed
    book.unassign("ops", user="ann")
    assert not ask(authorizer, who(), "api", "execute", target).allowed


def test_the_installed_managers_book_cannot_be_swapped_behind_the_decision_point(clock: FakeClock) -> None:
    rbac = RBACManager()
    rbac.create_role("ops", ["api:execute:deploy"])
    rbac.assign_role("ops", user="ann")
    authorizer = build_authorizer(Authz(rbac=rbac), clock)
    assert ask(authorizer, who(), "api", "execute", info("deploy")).allowed
    with pytest.raises(AttributeError):
        rbac.book = RoleBook()  # type: ignore[misc]  # read-only: changes go through the manager
    rbac.delete_role("ops")
    assert not ask(authorizer, who(), "api", "execute", info("deploy")).visible


def test_swapping_the_role_book_of_a_decision_point_drops_its_cached_decisions(clock: FakeClock) -> None:
    old, new = RoleBook(), RoleBook()
    old.define("ops", ["api:execute:deploy"])
    new.define("ops", ["api:read:other"])
    assert old.version == new.version
    authorizer = PolicyAuthorizer(old, None, clock, UTC)
    assert ask(authorizer, who("ops"), "api", "execute", info("deploy")).allowed
    authorizer.book = new
    assert not ask(authorizer, who("ops"), "api", "execute", info("deploy")).allowed


# -- documents ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("permissions", [None, 5, True])
def test_a_role_document_whose_permissions_are_not_a_list_is_a_configuration_error(
    permissions: object,
) -> None:
    with pytest.raises(ConfigurationError, match="ops"):
        RoleBook.from_document({"roles": {"ops": {"permissions": permissions}}})


def test_a_role_document_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="permission"):
        RoleBook.from_document({"roles": {"ops": {"permission": ["api:execute:deploy"]}}})


def test_a_policy_document_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown key"):
        PolicySet.from_document({"policies": {"p": {"condition": "user.a == 1", "effect": "permit", "x": 1}}})


# -- explain -----------------------------------------------------------------------------------------


def explainer_for(
    authorizer: Authorizer, clock: FakeClock, users: MemoryUserStore | None = None
) -> Explainer:
    catalog = Catalog()
    catalog.register("deploy", one_node(), tags=["ops"])
    return Explainer(catalog, lambda: authorizer, clock, keys=MemoryKeyStore(), users=users)


async def test_a_draft_with_malformed_role_permissions_is_invalid_input(clock: FakeClock) -> None:
    explainer = explainer_for(PolicyAuthorizer(RoleBook(), None, clock, UTC), clock)
    query = ExplainQuery.from_document(
        {
            "channel": "api",
            "workflow": "deploy",
            "roles": ["ops"],
            "draft": {"rbac": {"roles": {"ops": {"permissions": None}}}},
        }
    )
    with pytest.raises(InvalidInputError, match="draft"):
        await explainer.explain(query)


async def test_a_draft_is_evaluated_without_touching_the_installed_rules(clock: FakeClock) -> None:
    book, policies = RoleBook(), PolicySet()
    book.define("ops", ["api:read:ops"])
    installed = PolicyAuthorizer(book, policies, clock, UTC)
    explainer = explainer_for(installed, clock)
    draft = {
        "rbac": {"roles": {"ops": {"permissions": ["api:*:ops"]}}},
        "abac": {"policies": {"never": {"condition": "user.name == 'nobody'", "effect": "permit"}}},
    }
    body = {"channel": "api", "action": "execute", "workflow": "deploy", "roles": ["ops"]}
    drafted = await explainer.explain(ExplainQuery.from_document({**body, "draft": draft}))
    assert drafted["outcome"] == "invisible"
    assert [p["name"] for p in drafted["policies"]] == ["never"]
    plain = await explainer.explain(ExplainQuery.from_document(body))
    assert (plain["outcome"], plain["policies"]) == ("deny", [])
    assert (book.version, len(policies)) == (1, 0)


async def test_a_draft_reads_time_in_its_own_time_zone(clock: FakeClock) -> None:
    explainer = explainer_for(PolicyAuthorizer(None, None, clock, UTC), clock)
    engine = ABACPolicyEngine(time_zone="Asia/Tokyo")  # 19:00 there at 10:00 UTC
    engine.add_policy("hours", {"condition": "current_time between 09:00 and 17:00", "effect": "permit"})
    query = ExplainQuery.from_document(
        {"channel": "api", "action": "execute", "workflow": "deploy", "draft": {"abac": engine.to_document()}}
    )
    assert (await explainer.explain(query))["allowed"] is False


async def test_explaining_a_local_user_gives_the_decision_their_own_calls_get(clock: FakeClock) -> None:
    users = MemoryUserStore()
    ann = User(user_id="local:1", username="ann", source="local", roles=frozenset({"ops"}), created_at=TEN_AM)
    await users.add(ann)
    book = RoleBook()
    book.define("ops", ["api:*:ops"])
    policies = PolicySet()
    policies.add(
        "sso_only", {"condition": "user.auth_method == 'password'", "effect": "deny", "actions": ["execute"]}
    )
    installed = PolicyAuthorizer(book, policies, clock, UTC)
    # What the session of a password login stands for (AuthService.login: method "password").
    real = Principal(id=ann.user_id, kind="password", roles=ann.roles, name=ann.username)
    assert not ask(installed, real, "api", "execute", info("deploy", "ops")).allowed
    explainer = explainer_for(installed, clock, users)
    query = ExplainQuery.from_document(
        {"channel": "api", "action": "execute", "workflow": "deploy", "user": "ann"}
    )
    assert (await explainer.explain(query))["allowed"] is False


async def test_the_tenants_surface_is_explained_by_its_own_permissions(clock: FakeClock) -> None:
    book = RoleBook()
    book.define("tenant_ops", ["api:suspend:tenants"])
    explainer = explainer_for(PolicyAuthorizer(book, None, clock, UTC), clock)

    def asking(action: str, role: str = "tenant_ops") -> ExplainQuery:
        body = {"channel": "api", "action": action, "surface": "tenants", "roles": [role]}
        return ExplainQuery.from_document(body)

    suspend = await explainer.explain(asking("suspend"))
    delete = await explainer.explain(asking("delete"))
    stranger = await explainer.explain(asking("read", "nobody"))

    assert (suspend["outcome"], suspend["target"]) == ("allow", "the tenants surface")
    assert suspend["permission"] == "role 'tenant_ops' grants 'api:suspend:tenants'"
    assert delete["outcome"] == "deny"  # visible (suspend implies read), not deletable
    assert stranger["outcome"] == "invisible"
    assert asking("suspend").summary(suspend) == (
        "explained roles ['tenant_ops']: api:suspend on the tenants surface -> allow"
    )


# -- app wiring --------------------------------------------------------------------------------------


def test_a_refused_rbac_manager_is_not_kept_and_does_not_block_policies(clock: FakeClock) -> None:
    app = Nexus(enable_auth=False)
    live = SimpleNamespace(pipeline=SimpleNamespace(authorizer=AllowAll()), clock=clock)
    object.__setattr__(app, "_assembly", live)  # as if serving: _reauthorize rebuilds this pipeline's
    with pytest.raises(ConfigurationError, match="enable_auth"):
        app.set_rbac_manager(RBACManager())
    abac = ABACPolicyEngine()
    abac.add_policy("eu", {"condition": "user.location == 'EU'", "effect": "permit"})
    app.set_abac_engine(abac)
    assert isinstance(live.pipeline.authorizer, PolicyAuthorizer)
