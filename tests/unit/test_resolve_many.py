"""`Registry.resolve_many` (a client's `watch_stats`) answers as `resolve` does, one by one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from server.core.errors import ContainerNotFound, InvalidRequest
from tests.fake_flows import fake_manager


def test_a_list_resolves_as_each_reference_does(tmp_path: Path) -> None:
    reg = fake_manager(tmp_path, 300).registry
    rng = random.Random(15)
    ids = sorted(reg.records)
    refs: list[str] = []
    for cid in rng.sample(ids, 60):
        rec = reg.records[cid]
        refs += [cid, rec.info.name, cid[:12], cid[:12].upper(), cid[:2]]
    # unknown ones, a repeat, a prefix 300 ids surely share
    refs += ["nope", "flow-9999", "z" * 64, ids[0], ids[0], ids[0][:1]]
    expected: dict[str, None] = {}
    unknown: list[str] = []
    problems = []
    for ref in refs:
        try:
            expected[reg.resolve(ref).info.id] = None
        except ContainerNotFound:
            unknown.append(ref)
        except InvalidRequest:
            problems.append(ref)  # an ambiguous short prefix
    clean = [r for r in refs if r not in problems]
    assert reg.resolve_many(clean, "container_ids") == (list(expected), unknown)
    assert problems
    with pytest.raises(InvalidRequest) as err:
        reg.resolve_many([ids[0], problems[0]], "container_ids")
    assert err.value.field == "container_ids.1"
    with pytest.raises(InvalidRequest) as err:
        reg.resolve_many(["flow-0001", " "], "container_ids")
    assert err.value.field == "container_ids.1"
    assert reg.resolve_many([], "container_ids") == ([], [])
