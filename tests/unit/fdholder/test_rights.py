"""s6ipc.fdholder.rights: a client's rights from the allowing rule's environment."""

from __future__ import annotations

import pytest

from s6ipc.fdholder.rights import RightsError, rights_from_modifs


def test_rights_from_the_rule_environment() -> None:
    r = rights_from_modifs([])
    assert not r.retrieve.search(b"x") and not r.store.search(b"") and not (r.list or r.getdump or r.setdump)
    r = rights_from_modifs(["S6_FDHOLDER_RETRIEVE_REGEX=", "S6_FDHOLDER_STORE_REGEX=^pub",
                            "S6_FDHOLDER_LIST=", "S6_FDHOLDER_GETDUMP", "S6_FDHOLDER_SETDUMP=x"])
    assert r.retrieve.search(b"anything") and r.store.search(b"pubthing") and not r.store.search(b"xpub")
    assert r.list and not r.getdump and r.setdump  # an unset (no '=') grants nothing
    # the first definition wins; a later invalid one is not even compiled
    r = rights_from_modifs(["S6_FDHOLDER_STORE_REGEX=^a", "S6_FDHOLDER_STORE_REGEX=("])
    assert r.store.search(b"ab")
    with pytest.raises(RightsError) as info:
        rights_from_modifs(["S6_FDHOLDER_STORE_REGEX=("])
    assert (info.value.variable, info.value.value, info.value.message) == (
        "S6_FDHOLDER_STORE_REGEX", "(", "Unmatched ( or \\(")
