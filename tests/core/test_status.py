"""Status: a str enum whose members equal the plain strings the session used before."""

from __future__ import annotations

import json

import pytest
import traitlets

from tlwidgets import Session
from tlwidgets.core.status import Status


def test_members_equal_the_old_strings() -> None:
    assert [m.value for m in Status] == ["idle", "training", "stopping"]
    assert Status.IDLE == "idle" and Status.TRAINING == "training" and Status.STOPPING == "stopping"
    assert "idle" == Status.IDLE and Status.IDLE != "training"
    assert str(Status.TRAINING) == "training" and f"{Status.STOPPING}" == "stopping"
    assert f"{Status.IDLE:>6}" == "  idle"
    assert json.dumps({"status": Status.IDLE}) == '{"status": "idle"}'
    assert hash(Status.IDLE) == hash("idle") and {"idle": 1}[Status.IDLE] == 1
    assert Status.parse("stopping") is Status.STOPPING and Status.parse(Status.IDLE) is Status.IDLE


def test_parse_names_the_known_values() -> None:
    with pytest.raises(ValueError, match=r"status='busy' is not a session status; known: 'idle', 'training'"):
        Status.parse("busy")


def test_session_status_is_a_member_and_old_strings_still_compare() -> None:
    s = Session(device="cpu")
    assert s.status is Status.IDLE and s.status == "idle" and s.summary()["status"] == "idle"
    seen: list[object] = []
    s.observe(lambda change: seen.append(change["new"]), names="status")
    s.status = "training"  # a plain string is stored as its member
    assert s.status is Status.TRAINING and seen == [Status.TRAINING]
    s.request_stop()  # no trainer: nothing to stop
    s.status = Status.IDLE
    assert s.status is Status.IDLE
    with pytest.raises(traitlets.TraitError):
        s.status = "busy"
    assert s.status is Status.IDLE
