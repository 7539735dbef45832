"""Pairing low/high files by relative path, and seeded split assignment. No Ray here.

A file's id is its key relative to its side's root, without the last extension:
``low/a/1.png`` and ``high/a/1.jpg`` are both ``a/1`` and form a pair. Sorting (natural, so
``2`` comes before ``10``) only orders the pairs; it never decides which files pair up.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    id: str
    low_key: str | None  # None in a clean-only data set
    high_key: str
    split: str


@dataclass(frozen=True)
class Rejected:
    """An input file that did not make it into the data set, and why."""

    file: str  # the URI as the user would type it
    side: str  # "low" or "high"
    id: str
    reason: str

    def as_dict(self) -> dict:
        return {"file": self.file, "side": self.side, "id": self.id, "reason": self.reason}


def file_id(key: str) -> str:
    """``a/b/1.png`` -> ``a/b/1``; a name without extension is its own id."""
    head, name = posixpath.split(key)
    stem, ext = posixpath.splitext(name)
    stem = stem if ext else name
    return posixpath.join(head, stem) if head else stem


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``img2`` < ``img10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def parse_split(text: str) -> tuple[float, float, float]:
    """``0.7,0.2,0.1`` -> (0.7, 0.2, 0.1); ValueError unless three fractions >= 0 summing to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r}: expected three numbers like 0.7,0.2,0.1") from None
    if len(parts) != 3:
        raise ValueError(f"--split {text!r}: expected three fractions (train,val,test)")
    return check_split(parts, text)


def check_split(parts, text: str | None = None) -> tuple[float, float, float]:
    """``parts`` as a (train, val, test) tuple; ValueError unless three finite fractions >= 0
    that sum to 1."""
    shown = text if text is not None else ",".join(str(p) for p in parts)
    try:
        parts = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"--split {shown!r}: expected three numbers like 0.7,0.2,0.1") from None
    if len(parts) != 3:
        raise ValueError(f"--split {shown!r}: expected three fractions (train,val,test)")
    if not all(math.isfinite(p) for p in parts):
        raise ValueError(f"--split {shown!r}: fractions must be finite numbers")
    if any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ValueError(f"--split {shown!r}: fractions must be >= 0 and sum to 1")
    return parts[0], parts[1], parts[2]


def split_of(pair_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of ``pair_id``: a seeded hash of the id mapped to [0, 1) and cut by ``fractions``.

    Depends only on (seed, id, fractions), so a pair keeps its split when the data set grows.
    """
    digest = hashlib.sha256(f"{seed}\x00{pair_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    # u is just below 1.0 and float sums fell short: the last split with a nonzero share.
    return [n for n, f in zip(SPLITS, fractions) if f > 0][-1]


def id_order(pid: str) -> tuple:
    """The order of pair ids: natural, then the id itself (``a01`` and ``a1`` are naturally equal
    but different ids)."""
    return (natural_key(pid), pid)


def pair_keys(
    low_keys: list[str] | None,
    high_keys: list[str],
    *,
    seed: int,
    fractions: tuple[float, float, float],
    low_uri=lambda k: k,
    high_uri=lambda k: k,
) -> tuple[list[Pair], list[Rejected]]:
    """iter_pairs over two lists of keys held in memory: (pairs, rejected), each in id order."""

    def side(keys):
        return sorted(((file_id(k), k) for k in keys), key=lambda t: (id_order(t[0]), t[1]))

    pairs: list[Any] = []
    rejected: list[Any] = []
    for x in iter_pairs(
        side(low_keys) if low_keys is not None else None,
        side(high_keys),
        seed=seed,
        fractions=fractions,
        low_uri=low_uri,
        high_uri=high_uri,
    ):
        (pairs if isinstance(x, Pair) else rejected).append(x)
    return pairs, rejected


def iter_pairs(
    low: Iterable[tuple[str, str]] | None,
    high: Iterable[tuple[str, str]],
    *,
    seed: int,
    fractions: tuple[float, float, float],
    low_uri=lambda k: k,
    high_uri=lambda k: k,
) -> Iterator[Pair | Rejected]:
    """Match low and high files by id, as a merge of two sorted streams of (id, key) (sorted by
    id_order, then key): every key ends up in exactly one Pair or one Rejected, in id order.
    With ``low`` None (a clean-only data set) every unambiguous high key is a "pair" of its own.
    Only the files of one id are held at a time.

    ``low_uri``/``high_uri`` turn a key into the URI recorded for rejected files.
    """

    def groups(stream):
        for pid, g in itertools.groupby(stream, key=lambda t: t[0]):
            yield pid, [k for _, k in g]

    hi = groups(high)
    lo = groups(low) if low is not None else iter(())
    h, lw = next(hi, None), next(lo, None)
    while h is not None or lw is not None:
        if h is None or (lw is not None and id_order(lw[0]) < id_order(h[0])):
            assert lw is not None
            yield from _match(lw[0], lw[1], [], low is None, seed, fractions, low_uri, high_uri)
            lw = next(lo, None)
        elif lw is None or id_order(h[0]) < id_order(lw[0]):
            yield from _match(h[0], [], h[1], low is None, seed, fractions, low_uri, high_uri)
            h = next(hi, None)
        else:
            yield from _match(h[0], lw[1], h[1], low is None, seed, fractions, low_uri, high_uri)
            h, lw = next(hi, None), next(lo, None)


def _match(
    pid: str,
    lows: list[str],
    highs: list[str],
    clean_only: bool,
    seed,
    fractions,
    low_uri,
    high_uri,
) -> Iterator[Pair | Rejected]:
    """The Pair or the Rejected files of one id."""
    out: list[Rejected] = []
    for side, keys, to_uri in (("low", lows, low_uri), ("high", highs, high_uri)):
        if len(keys) > 1:
            names = ", ".join(sorted(keys))
            out += [
                Rejected(
                    to_uri(k),
                    side,
                    pid,
                    f"ambiguous: several {side} files share the id {pid!r} ({names})",
                )
                for k in keys
            ]
    if clean_only:
        if len(highs) == 1:
            yield Pair(pid, None, highs[0], split_of(pid, seed, fractions))
    elif len(lows) == 1 and len(highs) == 1:
        yield Pair(pid, lows[0], highs[0], split_of(pid, seed, fractions))
    else:
        for side, other, keys, others, to_uri in (
            ("low", "high", lows, highs, low_uri),
            ("high", "low", highs, lows, high_uri),
        ):
            if len(keys) == 1:
                why = "its partner is ambiguous" if len(others) > 1 else "no partner"
                out.append(
                    Rejected(
                        to_uri(keys[0]), side, pid, f"{why}: no single {other} file with id {pid!r}"
                    )
                )
    yield from sorted(out, key=lambda r: (r.side, r.file))
