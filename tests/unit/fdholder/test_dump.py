"""s6ipc.fdholder.dump: the S6_FD* variables fdholder-getdump exports and fdholder-setdump reads."""

from __future__ import annotations

from typing import Dict

import pytest

from s6ipc.base.envdir import merge_env
from s6ipc.base.errors import BadInput
from s6ipc.fdholder import tai
from s6ipc.fdholder.client import HeldDescriptor
from s6ipc.fdholder.dump import descriptors_from_env, dump_count, dump_modifs


def test_dump_modifs_in_getdumps_order() -> None:
    now = tai.now()
    finite = now.add_ms(5000)
    dump = [HeldDescriptor(3, b"unix:/a", finite), HeldDescriptor(4, b"b", tai.infinite_from(now))]
    assert dump_modifs(dump, now) == [
        "S6_FD#=2",
        "S6_FD_0=3", "S6_FDID_0=unix:/a", f"S6_FDLIMIT_0={finite.text()}",
        "S6_FD_1=4", "S6_FDID_1=b", "S6_FDLIMIT_1",      # no limit: the variable is unset
    ]
    assert finite.text().startswith("@") and len(finite.text()) == 25
    assert dump_modifs([], now) == ["S6_FD#=0"]


def test_what_getdump_exports_setdump_reads_back() -> None:
    now = tai.now()
    dump = [HeldDescriptor(7, b"one", now.add_ms(60000)), HeldDescriptor(9, b"two", tai.infinite_from(now))]
    env = merge_env({"S6_FDLIMIT_1": "@inherited", "OTHER": "x"}, dump_modifs(dump, now))
    assert "S6_FDLIMIT_1" not in env and env["OTHER"] == "x"
    count = dump_count(env)
    back = descriptors_from_env(env, count)
    assert count == 2
    assert [(h.fd, h.id) for h in back] == [(7, b"one"), (9, b"two")]
    assert back[0].limit == dump[0].limit
    assert not tai.is_finite(back[1].limit, now)


@pytest.mark.parametrize("env, message", [
    ({}, "S6_FD# not set"),
    ({"S6_FD#": ""}, "invalid $S6_FD#"),
    ({"S6_FD#": "x"}, "invalid $S6_FD#"),
    ({"S6_FD#": "-1"}, "invalid $S6_FD#"),
    ({"S6_FD#": "1 "}, "invalid $S6_FD#"),
])
def test_dump_count_errors_exit_100(env: Dict[str, str], message: str) -> None:
    with pytest.raises(BadInput) as e:
        dump_count(env)
    assert (str(e.value), e.value.exit_code) == (message, 100)


@pytest.mark.parametrize("env, message", [
    ({}, "S6_FD_0 not set"),
    ({"S6_FD_0": "x", "S6_FDID_0": "a"}, "invalid $S6_FD_0"),
    ({"S6_FD_0": "3"}, "S6_FDID_0 not set"),
    ({"S6_FD_0": "3", "S6_FDID_0": ""}, "invalid $S6_FDID_0"),
    ({"S6_FD_0": "3", "S6_FDID_0": "x" * 256}, "invalid $S6_FDID_0"),
    ({"S6_FD_0": "3", "S6_FDID_0": "a", "S6_FDLIMIT_0": "soon"}, "invalid $S6_FDLIMIT_0"),
])
def test_every_entry_is_checked(env: Dict[str, str], message: str) -> None:
    with pytest.raises(BadInput) as e:
        descriptors_from_env(env, 1)
    assert (str(e.value), e.value.exit_code) == (message, 100)


def test_an_id_of_255_bytes_is_the_longest() -> None:
    (held,) = descriptors_from_env({"S6_FD_0": "3", "S6_FDID_0": "x" * 255}, 1)
    assert held.id == b"x" * 255 and held.fd == 3


def test_count_zero_reads_nothing() -> None:
    assert descriptors_from_env({}, 0) == []
