"""The name server's namespace: groups, names and their metadata, as pure data (layer 9).

No I/O happens here: :class:`NameSpace` validates names and plans and applies changes; the name
server persists a planned change (see :mod:`pyroact.nameserver.storage`) before it applies it,
so a failed commit leaves the namespace as it was.

Rules (Pyro 3's, with W-15 of the reference applied):

* The tree has a root group ``:``; parts are separated by ``.``; absolute names start with ``:``.
  ``:Default`` and ``:Pyro`` exist from the start.
* A relative name is expanded against the default group (``:Default``): ``x`` → ``:Default.x``;
  the empty name is the default group itself.
* Name characters are ASCII 33..126 except ``\\``; ``:`` is allowed only as the leading root
  character (Pyro 3 accepted ``:x:y``). ``/`` is an ordinary character.
* Every :class:`~pyroact.errors.NamingError` carries the message and the full absolute name.
* User metadata must be JSON-serialisable (it is stored as JSON, never as a pickle).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pyroact.errors import NamingError

__all__ = [
    "DEFAULT_GROUP",
    "GROUP",
    "OBJECT",
    "PYRO_GROUP",
    "ROOT",
    "SEPARATOR",
    "Entry",
    "NameSpace",
    "expand",
    "validate",
]

ROOT: Final = ":"
SEPARATOR: Final = "."
DEFAULT_GROUP: Final = ":Default"
PYRO_GROUP: Final = ":Pyro"
GROUP: Final = 0
OBJECT: Final = 1
_BAD_CHARS: Final = frozenset("\\:")


@dataclass(slots=True)
class Entry:
    """One group or name of the namespace.

    Attributes:
        name: the absolute name.
        uri: the URI string of a name; None for a group.
        meta: the user metadata as JSON text (``"null"`` when none was set).
        created: the registration time (seconds since the epoch).
        owner: who registered it (reserved; always None for now).
    """

    name: str
    uri: str | None
    meta: str = "null"
    created: float = 0.0
    owner: str | None = None

    @property
    def kind(self) -> int:
        """:data:`GROUP` (0) or :data:`OBJECT` (1).

        Raises:
            Nothing.
        """
        return GROUP if self.uri is None else OBJECT

    @property
    def is_group(self) -> bool:
        """True for a group.

        Raises:
            Nothing.
        """
        return self.uri is None


def expand(name: str | None, default_group: str = DEFAULT_GROUP) -> str:
    """Expand a relative name against ``default_group`` (no validation of the result).

    Args:
        name: an absolute or relative name; None or ``""`` mean the default group itself.
        default_group: the group relative names live in; must be absolute.

    Returns:
        The absolute name.

    Raises:
        NamingError: ``'default group name is not absolute'`` when ``default_group`` does not
            start with ``:``; ``'invalid name'`` when ``name`` is not a string.
    """
    if not default_group.startswith(ROOT):
        raise NamingError("default group name is not absolute", default_group)
    if name is None or name == "":
        return default_group
    if not isinstance(name, str):
        raise NamingError("invalid name", repr(name))
    if name.startswith(ROOT):
        return name
    return default_group + SEPARATOR + name


def validate(name: str) -> str:
    """Check an absolute name against the character and structure rules.

    Args:
        name: an absolute name (``":a.b"``, or ``":"`` for the root).

    Returns:
        ``name`` unchanged.

    Raises:
        NamingError: ``'invalid character(s) in name'`` (a character outside ASCII 33..126,
            a ``\\``, or a ``:`` other than the leading one) or ``'invalid name'`` (not
            absolute, or an empty part as in ``:a..b``).
    """
    if not name.startswith(ROOT):
        raise NamingError("invalid name", name)
    if name == ROOT:
        return name
    body = name[1:]
    if any(not 33 <= ord(c) <= 126 or c in _BAD_CHARS for c in body):
        raise NamingError("invalid character(s) in name", name)
    if any(not part for part in body.split(SEPARATOR)):
        raise NamingError("invalid name", name)
    return name


def parent_of(name: str) -> str:
    """The absolute name of the group that holds ``name`` (``":"`` for top-level names).

    Args:
        name: a valid absolute name other than the root.

    Returns:
        The parent group's absolute name.

    Raises:
        Nothing.
    """
    head, sep, _tail = name.rpartition(SEPARATOR)
    return head if sep else ROOT


def short_name(name: str) -> str:
    """The last part of an absolute name.

    Args:
        name: a valid absolute name other than the root.

    Returns:
        The part after the last separator (or after the root character).

    Raises:
        Nothing.
    """
    return name.rpartition(SEPARATOR)[2].removeprefix(ROOT)


def _ancestors(name: str) -> Iterator[str]:
    # ":a.b.c" -> ":", ":a", ":a.b" (top-down)
    yield ROOT
    parts = name[1:].split(SEPARATOR)
    for i in range(1, len(parts)):
        yield ROOT + SEPARATOR.join(parts[:i])


def meta_to_json(name: str, meta: Any) -> str:
    """Encode user metadata as JSON text.

    Args:
        name: the absolute name it belongs to (for the error).
        meta: a JSON-serialisable value.

    Returns:
        The JSON text.

    Raises:
        NamingError: ``'metadata must be JSON-serialisable'``.
    """
    try:
        return json.dumps(meta, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise NamingError("metadata must be JSON-serialisable", name, str(exc)) from None


@dataclass(slots=True)
class NameSpace:
    """Groups and names, keyed by absolute name (the root is implicit and always present).

    The ``plan_*`` methods check an operation and return what would change without changing
    anything; :meth:`apply` and :meth:`remove` make the change. The convenience methods
    (:meth:`register`, :meth:`unregister` ...) do both, for callers without storage.

    Attributes:
        default_group: the group relative names are expanded against.
    """

    default_group: str = DEFAULT_GROUP
    _entries: dict[str, Entry] = field(default_factory=dict)
    _children: dict[str, dict[str, None]] = field(default_factory=lambda: {ROOT: {}})

    def __post_init__(self) -> None:
        expand("", self.default_group)  # raises for a relative default group

    # -- names ---------------------------------------------------------------------------------

    def full_name(self, name: str | None) -> str:
        """Expand and validate a name.

        Args:
            name: absolute or relative (None/``""`` = the default group).

        Returns:
            The absolute name.

        Raises:
            NamingError: the name is invalid (see :func:`validate`).
        """
        return validate(expand(name, self.default_group))

    def initial_groups(self) -> list[Entry]:
        """The groups every name server has (``:Default``, ``:Pyro``, the default group) that
        are missing now.

        Returns:
            Entries to :meth:`apply` (and persist).

        Raises:
            Nothing.
        """
        wanted = [DEFAULT_GROUP, PYRO_GROUP]
        if self.default_group != ROOT:
            wanted.extend(a for a in _ancestors(self.default_group) if a != ROOT)
            wanted.append(self.default_group)
        result: list[Entry] = []
        for name in dict.fromkeys(wanted):
            if name not in self._entries:
                result.append(Entry(name, None))
        return result

    # -- lookups -------------------------------------------------------------------------------

    def get(self, name: str) -> Entry | None:
        """The entry for an absolute name, or None.

        Raises:
            Nothing.
        """
        return self._entries.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name == ROOT

    def entries(self) -> list[Entry]:
        """Every group and name (not the root), parents before children.

        Raises:
            Nothing.
        """
        return sorted(self._entries.values(), key=lambda e: (e.name.count(SEPARATOR), e.name))

    def resolve(self, name: str | None) -> str:
        """The URI string registered under ``name``.

        Args:
            name: absolute or relative.

        Returns:
            The URI string.

        Raises:
            NamingError: ``'attempt to resolve groupname'``, ``'group not found'`` (a missing
                or non-group parent), ``'name not found'``, or an invalid name.
        """
        full = self.full_name(name)
        if full == ROOT:
            raise NamingError("attempt to resolve groupname", full)
        entry = self._entries.get(full)
        if entry is None:
            if not self._is_group(parent_of(full)):
                raise NamingError("group not found", full)
            raise NamingError("name not found", full)
        if entry.uri is None:
            raise NamingError("attempt to resolve groupname", full)
        return entry.uri

    def members(self, group: str | None) -> list[tuple[str, int]]:
        """The members of a group as ``(short name, 0 = group / 1 = object)``.

        Args:
            group: the group; None or ``""`` mean the root (server-side Pyro 3 semantics;
                the client proxy expands None to the default group first).

        Returns:
            The members, in registration order.

        Raises:
            NamingError: ``'group not found'``, ``'is no group'``, or an invalid name.
        """
        full = ROOT if group is None or group == "" else self.full_name(group)
        if full != ROOT:
            entry = self._entries.get(full)
            if entry is None:
                raise NamingError("group not found", full)
            if not entry.is_group:
                raise NamingError("is no group", full)
        return [(short_name(child), self._entries[child].kind) for child in self._children[full]]

    def flatlist(self) -> list[tuple[str, str]]:
        """Every name with its URI string, as ``(absolute name, uri)``.

        Raises:
            Nothing.
        """
        return [(e.name, e.uri) for e in self.entries() if e.uri is not None]

    def entry(self, name: str | None) -> Entry:
        """The entry of a group or name (the root has a synthetic entry).

        Args:
            name: absolute or relative.

        Returns:
            The entry.

        Raises:
            NamingError: ``'name not found'`` or an invalid name.
        """
        full = self.full_name(name)
        if full == ROOT:
            return Entry(ROOT, None)
        entry = self._entries.get(full)
        if entry is None:
            raise NamingError("name not found", full)
        return entry

    # -- planning ------------------------------------------------------------------------------

    def _is_group(self, name: str) -> bool:
        if name == ROOT:
            return True
        entry = self._entries.get(name)
        return entry is not None and entry.is_group

    def _check_parents(self, full: str) -> None:
        for ancestor in _ancestors(full):
            if ancestor == ROOT:
                continue
            entry = self._entries.get(ancestor)
            if entry is None:
                raise NamingError("(parent)group not found", full)
            if not entry.is_group:
                raise NamingError("parent is no group", full)

    def plan_register(self, name: str | None, uri: str, now: float = 0.0) -> Entry:
        """Check a registration.

        Args:
            name: absolute or relative.
            uri: the URI string (already validated by the caller).
            now: the registration time.

        Returns:
            The entry to persist and :meth:`apply`.

        Raises:
            NamingError: ``'name already exists'``, ``'(parent)group not found'``,
                ``'parent is no group'``, or an invalid name.
        """
        full = self.full_name(name)
        if full in self:
            raise NamingError("name already exists", full)
        self._check_parents(full)
        return Entry(full, uri, created=now)

    def plan_create_group(self, name: str | None, now: float = 0.0) -> Entry:
        """Check the creation of a group.

        Args:
            name: absolute or relative.
            now: the creation time.

        Returns:
            The entry to persist and :meth:`apply`.

        Raises:
            NamingError: ``'invalid groupname'`` (the root), ``'group already exists'``,
                ``'name already exists'``, ``'(parent)group not found'``,
                ``'parent is no group'``, or an invalid name.
        """
        full = self.full_name(name)
        if full == ROOT:
            raise NamingError("invalid groupname", full)
        existing = self._entries.get(full)
        if existing is not None:
            what = "group" if existing.is_group else "name"
            raise NamingError(f"{what} already exists", full)
        self._check_parents(full)
        return Entry(full, None, created=now)

    def plan_unregister(self, name: str | None) -> str:
        """Check the removal of a name.

        Args:
            name: absolute or relative.

        Returns:
            The absolute name to remove.

        Raises:
            NamingError: ``'name not found'``, ``'is a group, not an object'``, or an
                invalid name.
        """
        full = self.full_name(name)
        if full == ROOT:
            raise NamingError("is a group, not an object", full)
        entry = self._entries.get(full)
        if entry is None:
            raise NamingError("name not found", full)
        if entry.is_group:
            raise NamingError("is a group, not an object", full)
        return full

    def plan_delete_group(self, name: str | None) -> list[str]:
        """Check the (recursive) removal of a group.

        Args:
            name: absolute or relative.

        Returns:
            The absolute names to remove: the group and everything below it.

        Raises:
            NamingError: ``'not allowed to delete root group'``, ``'group not found'``,
                ``'is no group'``, or an invalid name.
        """
        full = self.full_name(name)
        if full == ROOT:
            raise NamingError("not allowed to delete root group", full)
        entry = self._entries.get(full)
        if entry is None:
            raise NamingError("group not found", full)
        if not entry.is_group:
            raise NamingError("is no group", full)
        doomed: list[str] = []
        stack = [full]
        while stack:
            current = stack.pop()
            doomed.append(current)
            stack.extend(self._children.get(current, ()))
        return doomed

    def plan_set_meta(self, name: str | None, meta: Any) -> Entry:
        """Check a metadata change.

        Args:
            name: absolute or relative name of a group or object (not the root).
            meta: a JSON-serialisable value.

        Returns:
            The changed entry (a copy) to persist and :meth:`apply`.

        Raises:
            NamingError: ``'name not found'``, ``'metadata must be JSON-serialisable'``,
                or an invalid name.
        """
        full = self.full_name(name)
        entry = self._entries.get(full)
        if entry is None:
            raise NamingError("name not found", full)
        return Entry(entry.name, entry.uri, meta_to_json(full, meta), entry.created, entry.owner)

    # -- changing ------------------------------------------------------------------------------

    def apply(self, entries: Iterable[Entry]) -> None:
        """Add or replace entries (parents first; a replaced group keeps its members).

        Args:
            entries: entries from the ``plan_*`` methods or from storage.

        Raises:
            NamingError: an entry's parent is missing or not a group, or its name is invalid.
        """
        for entry in entries:
            validate(entry.name)
            parent = parent_of(entry.name)
            if not self._is_group(parent):
                raise NamingError("(parent)group not found", entry.name)
            old = self._entries.get(entry.name)
            if old is not None and old.is_group and not entry.is_group:
                self.remove(self.plan_delete_group(entry.name))
            self._entries[entry.name] = entry
            self._children[parent][entry.name] = None
            if entry.is_group:
                self._children.setdefault(entry.name, {})
            else:
                self._children.pop(entry.name, None)

    def remove(self, names: Iterable[str]) -> None:
        """Remove entries by absolute name (missing ones are ignored).

        Args:
            names: absolute names, as returned by the ``plan_*`` methods.

        Raises:
            Nothing.
        """
        for name in names:
            if self._entries.pop(name, None) is None:
                continue
            self._children.get(parent_of(name), {}).pop(name, None)
            self._children.pop(name, None)

    # -- conveniences without storage ----------------------------------------------------------

    def register(self, name: str | None, uri: str, now: float = 0.0) -> Entry:
        """Plan and apply a registration (see :meth:`plan_register`).

        Raises:
            NamingError: as :meth:`plan_register`.
        """
        entry = self.plan_register(name, uri, now)
        self.apply([entry])
        return entry

    def create_group(self, name: str | None, now: float = 0.0) -> Entry:
        """Plan and apply a group creation (see :meth:`plan_create_group`).

        Raises:
            NamingError: as :meth:`plan_create_group`.
        """
        entry = self.plan_create_group(name, now)
        self.apply([entry])
        return entry

    def unregister(self, name: str | None) -> None:
        """Plan and apply the removal of a name (see :meth:`plan_unregister`).

        Raises:
            NamingError: as :meth:`plan_unregister`.
        """
        self.remove([self.plan_unregister(name)])

    def delete_group(self, name: str | None) -> list[str]:
        """Plan and apply the removal of a group (see :meth:`plan_delete_group`).

        Returns:
            The absolute names removed.

        Raises:
            NamingError: as :meth:`plan_delete_group`.
        """
        doomed = self.plan_delete_group(name)
        self.remove(doomed)
        return doomed

    def set_meta(self, name: str | None, meta: Any) -> None:
        """Plan and apply a metadata change (see :meth:`plan_set_meta`).

        Raises:
            NamingError: as :meth:`plan_set_meta`.
        """
        self.apply([self.plan_set_meta(name, meta)])

    def get_meta(self, name: str | None) -> Any:
        """The user metadata of a group or name (None when never set).

        Args:
            name: absolute or relative (the root has no metadata: None).

        Returns:
            The decoded JSON value.

        Raises:
            NamingError: ``'name not found'`` or an invalid name.
        """
        return json.loads(self.entry(name).meta)
