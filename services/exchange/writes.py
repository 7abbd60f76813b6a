"""Writes as values: a statement and its arguments, and ``compose``, which makes one statement of several.

The event store, the projections, the vault and the outbox each describe what they would write as a ``Write``;
a command's unit of work (``unit.py``) sends all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

_PARAM = re.compile(r"\$(\d+)")
_json = msgspec.json.Encoder()


class Write(NamedTuple):
    """One INSERT, UPDATE or DELETE (without a WITH clause of its own) and its arguments, numbered from $1.

    ``rows``: every argument is a list holding one value per row (the statement unnests them), so writes of the
    same statement merge into one by joining their lists. ``json``: the lists are sent as JSON text (rows as
    objects, for ``json_populate_recordset``): one argument for a whole table's rows is much cheaper to send than
    an array per column.
    """

    sql: str
    args: tuple[Any, ...]
    rows: bool = False
    json: bool = False


_composed: dict[tuple[str, ...], tuple[str, int]] = {}


def _renumber(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


def _encoded(write: Write) -> Write:
    """``write`` with its JSON arguments encoded, ready to send."""
    if not write.json:
        return write
    return Write(write.sql, tuple(_json.encode(arg).decode() for arg in write.args))


def merge(writes: Sequence[Write]) -> list[Write]:
    """``writes`` with those of one row-wise statement joined into one, where the first of them was."""
    merged: list[Write] = []
    at: dict[str, int] = {}
    for write in writes:
        i = at.get(write.sql) if write.rows else None
        if i is None:
            if write.rows:
                at[write.sql] = len(merged)
            merged.append(write)
        else:
            first = merged[i]
            merged[i] = first._replace(args=tuple([*a, *b] for a, b in zip(first.args, write.args, strict=True)))
    return merged


def compose(writes: Sequence[Write]) -> Write:
    """One statement doing every write (row-wise ones merged), each but the last as a data-modifying CTE.

    All the writes see the same snapshot and take effect all or nothing, in an order PostgreSQL does not promise:
    nothing may depend on it (which write's failure surfaces first, say). No two writes may change the same row.
    """
    writes = [_encoded(w) for w in merge(writes)]
    if len(writes) == 1:
        return writes[0]
    shape = tuple(w.sql for w in writes)
    found = _composed.get(shape)
    if found is None:
        if len(_composed) >= 1000:  # shapes are few; this only bounds the memory an odd mix could take
            _composed.clear()
        parts, offset = [], 0
        for write in writes:
            parts.append(_renumber(write.sql, offset))
            offset += max((int(n) for n in _PARAM.findall(write.sql)), default=0)
        ctes = ",\n".join(f"w{i} AS (\n{part}\n)" for i, part in enumerate(parts[:-1]))
        found = _composed[shape] = (f"WITH {ctes}\n{parts[-1]}", offset)
    sql, count = found
    args = tuple(a for w in writes for a in w.args)
    if len(args) != count:
        raise ValueError(f"the writes take {count} arguments, {len(args)} were given")
    return Write(sql, args)
