"""The catalog: workflow name and tag rules, one registration per name, sorted listing."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.core.catalog import Catalog
from nexus.errors import ConfigurationError, WorkflowNotFoundError
from nexus.workflow import Workflow, WorkflowBuilder


def workflow(code: str = "result = 1") -> Workflow:
    return WorkflowBuilder().add_node("PythonCodeNode", "n", {"code": code}).build()


@pytest.mark.parametrize("name", ["a", "add", "A1", "snake_case", "kebab-case", "Mixed-Case_9", "x" * 64])
def test_valid_name_is_accepted_and_found_again(name: str) -> None:
    catalog = Catalog()
    catalog.register(name, workflow())
    assert catalog.has(name)
    assert catalog.get(name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1abc",
        "_abc",
        "-abc",
        "has space",
        "a/b",
        "a.b",
        "a:b",
        "x" * 65,
        "café",
        "add\n",
        "../etc",
        5,
        None,
    ],
)
def test_invalid_name_is_refused(name: Any) -> None:
    catalog = Catalog()
    with pytest.raises(ConfigurationError, match="Invalid workflow name"):
        catalog.register(name, workflow())
    assert catalog.all() == []


@pytest.mark.parametrize("tag", ["math", "v1.2", "team:data", "_private", "9lives", "a-b", "t" * 64])
def test_valid_tag_is_kept(tag: str) -> None:
    entry = Catalog().register("w", workflow(), tags=[tag])
    assert entry.info.tags == (tag,)


@pytest.mark.parametrize("tag", ["", "-x", ".x", "has space", "t" * 65, "a/b", 3, None])
def test_invalid_tag_is_refused(tag: Any) -> None:
    catalog = Catalog()
    with pytest.raises(ConfigurationError, match="Invalid tag"):
        catalog.register("w", workflow(), tags=["ok", tag])
    assert not catalog.has("w")


def test_repeated_tags_are_kept_once_in_first_seen_order() -> None:
    entry = Catalog().register("w", workflow(), tags=["b", "a", "b", "a"])
    assert entry.info.tags == ("b", "a")


def test_a_single_string_as_tags_is_refused_rather_than_split_into_letters() -> None:
    with pytest.raises(ConfigurationError):
        Catalog().register("w", workflow(), tags="math")


def test_second_registration_under_a_name_is_refused_and_the_first_is_kept() -> None:
    catalog = Catalog()
    first = workflow("result = 1")
    catalog.register("w", first, description="first")
    with pytest.raises(ConfigurationError, match="already registered"):
        catalog.register("w", workflow("result = 2"), description="second")
    assert catalog.get("w").workflow is first
    assert catalog.get("w").info.description == "first"


@pytest.mark.parametrize("not_built", [WorkflowBuilder(), {"nodes": []}, None, "workflow"])
def test_anything_but_a_built_workflow_is_refused(not_built: Any) -> None:
    catalog = Catalog()
    with pytest.raises(ConfigurationError, match=r"needs a built Workflow"):
        catalog.register("w", not_built)
    assert not catalog.has("w")


def test_unbuilt_builder_is_refused_with_a_hint_to_build_it() -> None:
    with pytest.raises(ConfigurationError, match=r"WorkflowBuilder\.build\(\)"):
        Catalog().register("w", WorkflowBuilder())  # type: ignore[arg-type]  # the mistake under test


def test_getting_an_unknown_name_raises_workflow_not_found() -> None:
    catalog = Catalog()
    catalog.register("known", workflow())
    with pytest.raises(WorkflowNotFoundError, match="No workflow named 'unknown'"):
        catalog.get("unknown")
    assert not catalog.has("unknown")


def test_not_found_message_quotes_at_most_64_characters_of_the_name() -> None:
    with pytest.raises(WorkflowNotFoundError) as missing:
        Catalog().get("z" * 1000)
    assert missing.value.message == f"No workflow named {'z' * 64!r}."


def test_listing_is_sorted_by_name_whatever_the_registration_order() -> None:
    catalog = Catalog()
    for name in ("delta", "Alpha", "charlie", "bravo"):
        catalog.register(name, workflow())
    assert [entry.name for entry in catalog.all()] == ["Alpha", "bravo", "charlie", "delta"]


def test_registration_info_carries_description_tags_and_the_input_schema() -> None:
    builder = WorkflowBuilder()
    builder.add_input("a", int, description="First addend")
    builder.add_node("PythonCodeNode", "n", {"code": "result = a"})
    built = builder.build()
    entry = Catalog().register("echo", built, description="Echo a", tags=["demo"])
    assert (entry.info.name, entry.info.description, entry.info.tags) == ("echo", "Echo a", ("demo",))
    assert entry.info.input_schema == built.input_schema
    assert "a" in entry.info.input_schema["properties"]
    assert entry.workflow is built
