"""The README's list of ``PoolStats`` fields is the dataclass's (issue 20,
group 5: ``releases``, ``generation`` and ``window`` were missing). Read from
the dataclass, so a new field fails this test until the README names it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fastpool import PoolStats

ROOT = Path(__file__).resolve().parents[1].parent


def documented_stats() -> set[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("`pool.stats()` returns a `PoolStats`:")
    end = text.index("`stats(reset=True)`", start)
    # Parentheses explain: `closed` by reason (`lifetime`, ...: its keys), a
    # failing `configure`...; the fields are the names outside them.
    listed = re.sub(r" \([^)]*\)", "", text[start:end])
    names: set[str] = set()
    for code in re.findall(r"`([^`]+)`", listed):
        if code in ("pool.stats()", "PoolStats"):
            continue
        head, *tails = code.split("/")  # acquire_wait_p50/p99/max
        names.add(head)
        stem = head.rsplit("_", 1)[0]
        names.update(f"{stem}_{tail}" for tail in tails)
    return names


def test_the_readme_lists_every_pool_stats_field_and_no_other():
    fields = {f.name for f in dataclasses.fields(PoolStats)}
    documented = documented_stats()
    assert fields - documented == set(), "fields the README's Stats list omits"
    assert documented - fields == set(), "names in the README's Stats list that are no field"
