"""Maps user object ids to identity-bank slots, so adding/removing objects is a mapping change."""

from __future__ import annotations


class ObjectManager:
    """User object id (1..255) <-> (bank, slot), slots 1..slots_per_bank in each bank.

    New objects take the first free slot; when every bank is full a new bank is opened.
    """

    def __init__(self, slots_per_bank: int) -> None:
        self.slots_per_bank = slots_per_bank
        self._slots: dict[int, tuple[int, int]] = {}
        self.num_banks = 0

    @property
    def object_ids(self) -> list[int]:
        """Tracked user ids, ascending."""
        return sorted(self._slots)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def slot_of(self, object_id: int) -> tuple[int, int]:
        """(bank, slot) of a tracked object."""
        return self._slots[object_id]

    def add(self, object_id: int) -> tuple[int, int]:
        """Assign a slot to a new object (or return the existing one)."""
        if object_id in self._slots:
            return self._slots[object_id]
        taken = set(self._slots.values())
        for bank in range(self.num_banks + 1):
            for slot in range(1, self.slots_per_bank + 1):
                if (bank, slot) not in taken:
                    self.num_banks = max(self.num_banks, bank + 1)
                    self._slots[object_id] = (bank, slot)
                    return bank, slot
        raise AssertionError("unreachable: a new bank always has free slots")

    def remove(self, object_id: int) -> tuple[int, int]:
        """Free an object's slot; returns it."""
        return self._slots.pop(object_id)

    def clear(self) -> None:
        self._slots.clear()
        self.num_banks = 0
