"""String object ids (what the ROS interface speaks) <-> numeric mask values (the label map).

A new id takes the lowest free value in 1..MAX_OBJECT_ID; a known id keeps its value, so
replacing an object does not renumber the mask. Label-map seeds (``seed_mask``) name their
objects by value: value k is the id ``str(k)``.
"""

from __future__ import annotations

from typing import Iterable, Optional

from defvos_core.config import MAX_OBJECT_ID
from defvos_core.errors import SeedError


class ObjectIdMap:
    """Bidirectional map of object id strings and mask values; not thread-safe (one owner)."""

    def __init__(self) -> None:
        self._value_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._value_of)

    def __contains__(self, object_id: str) -> bool:
        return object_id in self._value_of

    def value_of(self, object_id: str) -> int:
        """Return the mask value of a known id (KeyError otherwise)."""
        return self._value_of[object_id]

    def id_of(self, value: int) -> Optional[str]:
        """Return the id holding ``value``, or None."""
        return self._id_of.get(value)

    def plan(self, ids: Iterable[str]) -> dict[str, int]:
        """Return the value each id would get (known ids keep theirs); changes nothing.

        Raises SeedError (kind ``prompt_id``) for an empty or repeated id, or when the free
        values run out.
        """
        planned: dict[str, int] = {}
        taken = set(self._id_of)
        free = (value for value in range(1, MAX_OBJECT_ID + 1) if value not in taken)
        for object_id in ids:
            if not object_id:
                raise SeedError('prompt_id', 'an object id must be a non-empty string')
            if object_id in planned:
                raise SeedError('prompt_id', f"object id '{object_id}' is given twice")
            if object_id in self._value_of:
                planned[object_id] = self._value_of[object_id]
                continue
            value = next(free, None)
            if value is None:
                raise SeedError('prompt_id', f'no free mask value for object '
                                f"'{object_id}': {MAX_OBJECT_ID} objects at most")
            planned[object_id] = value
        return planned

    def plan_values(self, values: Iterable[int]) -> dict[str, int]:
        """Return the ids of label-map values (``str(k)``); SeedError if a value is taken."""
        planned: dict[str, int] = {}
        for value in values:
            owner = self._id_of.get(value)
            if owner is not None and owner != str(value):
                raise SeedError('prompt_id', f"mask value {value} belongs to object '{owner}'; "
                                'use the ~/add_objects service to replace it')
            planned[str(value)] = value
        return planned

    def commit(self, planned: dict[str, int]) -> None:
        """Record planned ids and values (after the tracker accepted them)."""
        for object_id, value in planned.items():
            self._value_of[object_id] = value
            self._id_of[value] = object_id

    def remove(self, object_id: str) -> int:
        """Forget an id; return the value it held (KeyError if unknown)."""
        value = self._value_of.pop(object_id)
        del self._id_of[value]
        return value

    def clear(self) -> None:
        """Forget every id."""
        self._value_of.clear()
        self._id_of.clear()

    def items(self) -> list[tuple[str, int]]:
        """Return (id, value) pairs by ascending value."""
        return sorted(self._value_of.items(), key=lambda item: item[1])
