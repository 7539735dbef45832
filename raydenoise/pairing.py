"""Pairing low/high files by relative path, and seeded split assignment. No Ray here.

A file's id is its key relative to its side's root, without the last extension:
``low/a/1.png`` and ``high/a/1.jpg`` are both ``a/1`` and form a pair. Sorting (natural, so
``2`` comes before ``10``) only orders the pairs; it never decides which files pair up.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from dataclasses import dataclass

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
    return parts  # type: ignore[return-value]


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


def pair_keys(
    low_keys: list[str] | None,
    high_keys: list[str],
    *,
    seed: int,
    fractions: tuple[float, float, float],
    low_uri=lambda k: k,
    high_uri=lambda k: k,
) -> tuple[list[Pair], list[Rejected]]:
    """Match low and high keys by id; every key ends up in exactly one pair or one Rejected.
    With ``low_keys`` None (a clean-only data set) every unambiguous high key is a "pair" of its own.

    ``low_uri``/``high_uri`` turn a key into the URI recorded for rejected files.
    """
    rejected: list[Rejected] = []

    def index(keys: list[str], side: str, to_uri) -> dict[str, str]:
        by_id: dict[str, list[str]] = {}
        for key in keys:
            by_id.setdefault(file_id(key), []).append(key)
        unique = {}
        for pid, ks in by_id.items():
            if len(ks) == 1:
                unique[pid] = ks[0]
            else:
                names = ", ".join(sorted(ks))
                for k in ks:
                    reason = f"ambiguous: several {side} files share the id {pid!r} ({names})"
                    rejected.append(Rejected(to_uri(k), side, pid, reason))
        return unique

    low = index(low_keys, "low", low_uri) if low_keys is not None else None
    high = index(high_keys, "high", high_uri)
    ambiguous = {r.id for r in rejected}
    pairs = []
    if low is None:
        pairs = [Pair(pid, None, high[pid], split_of(pid, seed, fractions)) for pid in sorted(high, key=natural_key)]
        rejected.sort(key=lambda r: (natural_key(r.id), r.side, r.file))
        return pairs, rejected
    for pid in sorted(set(low) | set(high), key=natural_key):
        if pid in low and pid in high:
            pairs.append(Pair(pid, low[pid], high[pid], split_of(pid, seed, fractions)))
            continue
        side, other, key, to_uri = (
            ("low", "high", low[pid], low_uri) if pid in low else ("high", "low", high[pid], high_uri)
        )
        why = "its partner is ambiguous" if pid in ambiguous else "no partner"
        reason = f"{why}: no single {other} file with id {pid!r}"
        rejected.append(Rejected(to_uri(key), side, pid, reason))
    rejected.sort(key=lambda r: (natural_key(r.id), r.side, r.file))
    return pairs, rejected
