"""What a session is doing: :class:`Status`, the values of ``Session.status``."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """What a session is doing now; the value of ``Session.status``.

    A ``str`` enum: each member equals its old string (``Status.IDLE == "idle"``), prints
    as it (``f"{Status.IDLE}"`` is ``"idle"``) and is written to JSON as it, so code and
    front ends that compare or show the plain string keep working.
    """

    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: object) -> Status:
        """The member for ``value`` (a member or its string); a clear ``ValueError`` otherwise."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"status={value!r} is not a session status; known: {known}.") from None
