"""Edits of an object tree (a hierarchy's root children), shared by the project backends."""

from __future__ import annotations

import uuid
from typing import Iterable, Sequence

from qpsam.errors import ProjectError
from qpsam.objects import PathObject, walk

__all__ = ["check_objects", "add_objects", "remove_objects", "replace_objects"]


def _as_id(value: PathObject | uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, PathObject):
        return value.id
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ProjectError(f"{value!r} is not an object id") from None


def check_objects(objects: Sequence[PathObject]) -> None:
    """Objects must be PathObjects, each id once."""
    seen: set[uuid.UUID] = set()
    for obj in walk(objects):
        if not isinstance(obj, PathObject):
            raise ProjectError(f"expected PathObjects, got {type(obj).__name__}")
        if obj.id in seen:
            raise ProjectError(f"object id {obj.id} appears twice")
        seen.add(obj.id)


def add_objects(tree: Sequence[PathObject], new: Iterable[PathObject],
                parent: PathObject | uuid.UUID | str | None = None) -> list[PathObject]:
    """``tree`` with ``new`` objects at the top level or as children of ``parent``."""
    new = list(new)
    check_objects(new)
    known = {o.id for o in walk(tree)}
    clash = [o.id for o in walk(new) if o.id in known]
    if clash:
        raise ProjectError(f"object id {clash[0]} is already in the hierarchy ({len(clash)} clash(es)); "
                           "use replace_objects to change objects")
    if parent is None:
        return list(tree) + new
    parent_id = _as_id(parent)
    found = False

    def attach(obj: PathObject) -> PathObject:
        nonlocal found
        if obj.id == parent_id:
            found = True
            return obj.replace(children=tuple(obj.children) + tuple(new))
        if not obj.children:
            return obj
        return obj.replace(children=tuple(attach(c) for c in obj.children))

    updated = [attach(o) for o in tree]
    if not found:
        raise ProjectError(f"parent object {parent_id} is not in the hierarchy")
    return updated


def remove_objects(tree: Sequence[PathObject], objects: Iterable[PathObject | uuid.UUID | str],
                   keep_children: bool = False) -> list[PathObject]:
    """``tree`` without ``objects`` (and their descendants, unless ``keep_children`` moves them up)."""
    ids = {_as_id(o) for o in objects}
    missing = ids - {o.id for o in walk(tree)}
    if missing:
        raise ProjectError(f"object {sorted(map(str, missing))[0]} is not in the hierarchy")

    def prune(items: Sequence[PathObject]) -> list[PathObject]:
        out: list[PathObject] = []
        for obj in items:
            children = prune(obj.children)
            if obj.id in ids:
                if keep_children:
                    out.extend(children)
            else:
                out.append(obj.replace(children=tuple(children)) if obj.children else obj)
        return out

    return prune(tree)


def replace_objects(tree: Sequence[PathObject], objects: Iterable[PathObject]) -> list[PathObject]:
    """``tree`` with objects swapped for new versions with the same ids; one given without children keeps the
    children of the object it replaces."""
    new = {o.id: o for o in objects}
    missing = set(new) - {o.id for o in walk(tree)}
    if missing:
        raise ProjectError(f"object {sorted(map(str, missing))[0]} is not in the hierarchy")

    def swap(items: Sequence[PathObject]) -> list[PathObject]:
        out = []
        for obj in items:
            children = tuple(swap(obj.children))
            if obj.id in new:
                replacement = new[obj.id]
                obj = replacement if replacement.children else replacement.replace(children=children)
            elif obj.children:
                obj = obj.replace(children=children)
            out.append(obj)
        return out

    updated = swap(tree)
    check_objects(updated)
    return updated
