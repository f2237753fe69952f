"""The namespace rules of the name server, as pure data (no sockets, no storage)."""

from __future__ import annotations

import pytest

from pyroact.errors import NamingError
from pyroact.nameserver.namespace import (
    GROUP,
    OBJECT,
    Entry,
    NameSpace,
    expand,
    parent_of,
    short_name,
    validate,
)

URI = "PYRO://127.0.0.1:7766/abc"


def fresh() -> NameSpace:
    space = NameSpace()
    space.apply(space.initial_groups())
    return space


def naming_error(excinfo: pytest.ExceptionInfo[NamingError]) -> tuple[object, ...]:
    return tuple(excinfo.value.args[:2])


def test_default_and_pyro_groups_exist_at_start() -> None:
    space = fresh()
    assert sorted(space.members(":")) == [("Default", GROUP), ("Pyro", GROUP)]
    assert space.members(None) == space.members(":")  # server side: None is the root
    assert space.members(":Default") == []


def test_initial_groups_include_a_nested_default_group() -> None:
    space = NameSpace(default_group=":app.sub")
    space.apply(space.initial_groups())
    assert space.get(":app") is not None and space.get(":app.sub") is not None
    assert space.initial_groups() == []


@pytest.mark.parametrize(
    ("name", "full"),
    [("x", ":Default.x"), ("a.b", ":Default.a.b"), (":abs", ":abs"), ("", ":Default")],
)
def test_relative_names_are_expanded_with_the_default_group(name: str, full: str) -> None:
    assert expand(name) == full
    assert fresh().full_name(name) == full


def test_none_expands_to_the_default_group() -> None:
    assert expand(None, ":Other") == ":Other"


def test_a_relative_default_group_is_refused() -> None:
    with pytest.raises(NamingError) as excinfo:
        expand("x", "Default")
    assert naming_error(excinfo) == ("default group name is not absolute", "Default")
    with pytest.raises(NamingError, match="default group name is not absolute"):
        NameSpace(default_group="Default")


@pytest.mark.parametrize(
    "name", [":a b", ":tab\there", ":back\\slash", ":caf\u00e9", ":x:y", ":a.b:c", ":\x7f"]
)
def test_bad_characters_are_refused_with_the_full_name(name: str) -> None:
    with pytest.raises(NamingError) as excinfo:
        validate(name)
    assert naming_error(excinfo) == ("invalid character(s) in name", name)


def test_relative_bad_name_error_carries_the_absolute_name() -> None:
    with pytest.raises(NamingError) as excinfo:
        fresh().register("a b", URI)
    assert naming_error(excinfo) == ("invalid character(s) in name", ":Default.a b")


@pytest.mark.parametrize("name", [":a..b", ":a.", ":.a", ":a.b..", "::"[:1] + "."])
def test_empty_parts_are_invalid_names(name: str) -> None:
    with pytest.raises(NamingError) as excinfo:
        validate(name)
    assert naming_error(excinfo) == ("invalid name", name)


@pytest.mark.parametrize("name", [":", ":a", ":a.b/c", ":!~#$%&'()*+,-/;<=>?@[]^_`{|}"])
def test_valid_names(name: str) -> None:
    assert validate(name) == name


def test_parent_and_short_names() -> None:
    assert parent_of(":a") == ":"
    assert parent_of(":a.b.c") == ":a.b"
    assert short_name(":a.b.c") == "c"
    assert short_name(":a") == "a"


def test_register_resolve_unregister() -> None:
    space = fresh()
    entry = space.register("thing", URI, now=12.5)
    assert (entry.name, entry.kind, entry.created) == (":Default.thing", OBJECT, 12.5)
    assert space.resolve(":Default.thing") == URI
    assert space.resolve("thing") == URI
    assert space.members(":Default") == [("thing", OBJECT)]
    assert space.flatlist() == [(":Default.thing", URI)]
    space.unregister("thing")
    with pytest.raises(NamingError) as excinfo:
        space.resolve("thing")
    assert naming_error(excinfo) == ("name not found", ":Default.thing")


def test_register_errors() -> None:
    space = fresh()
    space.register(":Default.dup", URI)
    with pytest.raises(NamingError) as excinfo:
        space.register("dup", URI)
    # W-15: the full absolute name, not only the last part as in Pyro 3.
    assert naming_error(excinfo) == ("name already exists", ":Default.dup")
    with pytest.raises(NamingError) as excinfo:
        space.register(":nogroup.x", URI)
    assert naming_error(excinfo) == ("(parent)group not found", ":nogroup.x")
    with pytest.raises(NamingError) as excinfo:
        space.register(":Default.dup.x", URI)
    assert naming_error(excinfo) == ("parent is no group", ":Default.dup.x")
    with pytest.raises(NamingError) as excinfo:
        space.register(":Default.dup.x.y", URI)
    assert naming_error(excinfo) == ("parent is no group", ":Default.dup.x.y")
    with pytest.raises(NamingError) as excinfo:
        space.register(":Default", URI)
    assert naming_error(excinfo) == ("name already exists", ":Default")


def test_resolve_errors() -> None:
    space = fresh()
    for name, message in [
        (":Default", "attempt to resolve groupname"),
        (":", "attempt to resolve groupname"),
        (":missing.x", "group not found"),
        (":Default.nothing", "name not found"),
    ]:
        with pytest.raises(NamingError) as excinfo:
            space.resolve(name)
        assert naming_error(excinfo) == (message, name)


def test_unregister_errors() -> None:
    space = fresh()
    for name, message in [
        (":Default", "is a group, not an object"),
        (":", "is a group, not an object"),
        (":Default.nothing", "name not found"),
    ]:
        with pytest.raises(NamingError) as excinfo:
            space.unregister(name)
        assert naming_error(excinfo) == (message, name)


def test_groups_create_list_delete_recursively() -> None:
    space = fresh()
    space.create_group(":app")
    space.create_group(":app.sub")
    space.register(":app.sub.obj", URI)
    space.register(":app.top", URI)
    assert sorted(space.members(":app")) == [("sub", GROUP), ("top", OBJECT)]
    removed = space.delete_group(":app")
    assert sorted(removed) == [":app", ":app.sub", ":app.sub.obj", ":app.top"]
    assert ":app.sub.obj" not in space
    assert sorted(space.members(":")) == [("Default", GROUP), ("Pyro", GROUP)]
    space.create_group(":app")  # the name is free again
    assert space.members(":app") == []


def test_group_errors() -> None:
    space = fresh()
    space.register(":Default.obj", URI)
    cases = [
        (space.create_group, ":", "invalid groupname"),
        (space.create_group, ":Default", "group already exists"),
        (space.create_group, ":Default.obj", "name already exists"),
        (space.create_group, ":no.sub", "(parent)group not found"),
        (space.create_group, ":Default.obj.sub", "parent is no group"),
        (space.delete_group, ":", "not allowed to delete root group"),
        (space.delete_group, ":nothing", "group not found"),
        (space.delete_group, ":Default.obj", "is no group"),
        (space.members, ":nothing", "group not found"),
        (space.members, ":Default.obj", "is no group"),
    ]
    for method, name, message in cases:
        with pytest.raises(NamingError) as excinfo:
            method(name)  # type: ignore[operator]
        assert naming_error(excinfo) == (message, name), (method, name)


def test_metadata_on_names_and_groups_is_json() -> None:
    space = fresh()
    space.register("obj", URI)
    assert space.get_meta("obj") is None
    space.set_meta("obj", {"colour": "red", "sizes": (1, 2)})
    assert space.get_meta("obj") == {"colour": "red", "sizes": [1, 2]}
    space.set_meta(":Default", "group meta")
    assert space.get_meta(":Default") == "group meta"
    assert space.resolve("obj") == URI  # metadata does not change the URI
    with pytest.raises(NamingError) as excinfo:
        space.set_meta("obj", object())
    assert naming_error(excinfo) == ("metadata must be JSON-serialisable", ":Default.obj")
    with pytest.raises(NamingError) as excinfo:
        space.set_meta("missing", 1)
    assert naming_error(excinfo) == ("name not found", ":Default.missing")


def test_plans_change_nothing_until_applied() -> None:
    space = fresh()
    entry = space.plan_register("x", URI)
    space.create_group(":g")
    doomed = space.plan_delete_group(":g")
    assert ":Default.x" not in space and ":g" in space
    space.apply([entry])
    space.remove(doomed)
    assert ":Default.x" in space and ":g" not in space


def test_apply_loads_entries_in_parent_order_and_refuses_orphans() -> None:
    space = NameSpace()
    space.apply([Entry(":a", None), Entry(":a.b", URI, '{"k": 1}', 3.0)])
    assert space.resolve(":a.b") == URI and space.get_meta(":a.b") == {"k": 1}
    with pytest.raises(NamingError, match="group not found"):
        space.apply([Entry(":orphan.x", URI)])
