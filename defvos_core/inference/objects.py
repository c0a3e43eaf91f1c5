"""Maps user object ids to identity-bank slots, so adding/removing objects is a mapping change."""

from __future__ import annotations

import torch

Slot = tuple[int, int]  # (bank, slot); slots are 1..slots_per_bank, 0 is each bank's background


class ObjectManager:
    """User object id (1..254) <-> (bank, slot), slots 1..slots_per_bank in each bank.

    New objects take the first free slot; when every bank is full a new bank is opened.
    After removals, `compact` moves objects out of surplus banks, so the bank count (what
    each frame's compute scales with) is always ceil(objects / slots_per_bank).
    """

    def __init__(self, slots_per_bank: int) -> None:
        self.slots_per_bank = slots_per_bank
        self._slots: dict[int, Slot] = {}
        self.num_banks = 0

    @property
    def object_ids(self) -> list[int]:
        """Tracked user ids, ascending."""
        return sorted(self._slots)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def slot_of(self, object_id: int) -> Slot:
        """(bank, slot) of a tracked object."""
        return self._slots[object_id]

    def add(self, object_id: int) -> Slot:
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

    def remove(self, object_id: int) -> Slot:
        """Free an object's slot; returns it. Call `compact` after removals."""
        return self._slots.pop(object_id)

    def compact(self) -> list[tuple[Slot, Slot]]:
        """Shrink to ceil(objects / slots_per_bank) banks; return the (old, new) slot moves.

        Objects of the surplus (last) banks move to free slots of the kept ones, preferring
        their own slot number (the same identity embedding); other objects stay put.
        """
        banks = -(-len(self._slots) // self.slots_per_bank)
        taken = {slot for slot in self._slots.values() if slot[0] < banks}
        free = [(bank, slot) for bank in range(banks)
                for slot in range(1, self.slots_per_bank + 1) if (bank, slot) not in taken]
        moves = []
        for object_id in sorted(self._slots, key=self._slots.get):
            old = self._slots[object_id]
            if old[0] < banks:
                continue
            new = next((s for s in free if s[1] == old[1]), free[0])
            free.remove(new)
            self._slots[object_id] = new
            moves.append((old, new))
        self.num_banks = banks
        return moves

    def clear(self) -> None:
        self._slots.clear()
        self.num_banks = 0

    def snapshot(self) -> tuple[dict[int, Slot], int]:
        """Return the whole state, for `restore`."""
        return dict(self._slots), self.num_banks

    def restore(self, state: tuple[dict[int, Slot], int]) -> None:
        """Return to a `snapshot`."""
        self._slots, self.num_banks = dict(state[0]), state[1]


def background_from_objects(objects: torch.Tensor, dim: int) -> torch.Tensor:
    """Background probability left by the objects: 1 - their sum, at least 0.

    objects: object probabilities stacked along `dim` (e.g. (S, h4, w4) with dim 0, or
    (B, S, h4, w4) with dim 1); the result drops that dimension.
    """
    return (1 - objects.sum(dim=dim)).clamp(min=0)


def remap_slots(mask: torch.Tensor, erased: list[Slot], moved: list[tuple[Slot, Slot]],
                banks: int) -> torch.Tensor:
    """Return a stored soft mask (B, S+1, h4, w4) after slot changes, as a new tensor.

    `erased` slots become background, each `moved` (old, new) pair carries its object's
    channel over, and the bank count becomes `banks` (added banks are all background).
    Each bank's background is then 1 - the sum of its objects, as when the mask was made.
    """
    kept = min(banks, mask.shape[0])
    out = mask.new_zeros(banks, *mask.shape[1:])
    out[:kept] = mask[:kept]
    for bank, slot in erased + [old for old, _ in moved]:
        if bank < kept:
            out[bank, slot] = 0
    for (old_bank, old_slot), (new_bank, new_slot) in moved:
        out[new_bank, new_slot] = mask[old_bank, old_slot]
    out[:, 0] = background_from_objects(out[:, 1:], dim=1)
    return out


def merge_banks(log_probs: torch.Tensor, places: list[Slot]) -> torch.Tensor:
    """Per-bank log-probabilities (B, S+1, h4, w4) -> (K+1, h4, w4) over [background, objects].

    The objects are those at `places`, in order. Background is the least likely of the
    banks' backgrounds; then a softmax over it and the objects only (unused slots take no
    probability).
    """
    rows = [log_probs[:, 0].min(dim=0).values]
    rows += [log_probs[bank, slot] for bank, slot in places]
    return torch.softmax(torch.stack(rows), dim=0)
