"""Planning a job: the locations checked, then the input and output listings and the earlier report
merged into the run's plan.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ...ledger import report as rpt
from ...ledger import runfiles
from ...ledger.plan import (
    KEEP,
    OTHER_MODEL_WHY,
    Item,
    other_maker,
    select,
    trusted,
    with_earlier,
    with_outputs,
    with_renamed_outputs,
)
from ...ledger.report import EXCLUDED
from ...ledger.run import RunLedger
from ...storage.names import is_partial
from ...storage.store import Entry, Store, open_store
from .config import DenoiseConfig, DenoiseError


def check_locations(inp: Store, out: Store, ref: Store | None, rep: Store) -> None:
    """Refuse overlapping locations, compared after resolving symlinks and '..': outputs must not
    land among the inputs or references (or be read back as inputs on a rerun), and the report
    must not be read back as input."""
    if inp.contains(out):
        raise DenoiseError(
            f"--output {out.root} is inside --input {inp.root}"
            f"{' (after resolving links)' if inp.identity() != inp.root else ''}: "
            "outputs would be read back as inputs, or overwrite them"
        )
    if out.contains(inp):
        raise DenoiseError(
            f"--input {inp.root} is inside --output {out.root}: outputs could overwrite inputs"
        )
    if ref is not None and (ref.contains(out) or out.contains(ref)):
        raise DenoiseError(
            f"--output {out.root} and --reference {ref.root} overlap: outputs could overwrite references"
        )
    if inp.contains(rep):
        raise DenoiseError(
            f"--report {rep.root} is inside --input {inp.root}: the report would be read as input"
        )


@dataclass
class _Planned:
    """What planning decided (the rows themselves are in the run's plan files)."""

    plan: runfiles.Plan
    to_do: int = 0  # inputs with no output
    existing: int = 0  # with an output to verify
    trusted: int = 0  # with an output an earlier report vouches for (not read again)
    redo: int = (
        0  # with an output of unknown or other origin (another model, a changed input): redone
    )
    refused: int = 0  # of those, made by another model or options, with --other-model refuse
    refused_example: tuple[str, str] | None = None  # (key, the model that made it)
    excluded: int = 0
    example: tuple[str, str] | None = None  # an excluded key and why


def _plan(
    cfg: DenoiseConfig, inp: Store, out: Store, ledger: RunLedger, stamp: dict[str, str]
) -> _Planned:
    """Merge the input listing, the output listing and the earlier runs' report rows as sorted
    streams (raydenoise.ledger.plan) into the run's plan files: memory does not grow with the number of
    objects. An existing output is kept only when an earlier row says this input was made into it
    by this run's model and options (``stamp``, see made_by); without a reference, one whose size
    and tag also match that row is trusted without reading it, the others are verified by the
    workers (MD5, size). Outputs of unknown or other origin are redone (``--other-model refuse``:
    DenoiseError naming both models instead, before any work)."""
    partials: list[str] = []

    def outputs() -> Iterator[Entry]:
        for e in out.iter_entries():
            if is_partial(e.key):
                partials.append(e.key)  # a temporary file of an interrupted write: removed below
            else:
                yield e

    earlier = () if cfg.overwrite else ledger.earlier_rows()
    planned = _Planned(ledger.new_plan())
    with (
        planned.plan as plan,
        _items(cfg, inp, None if cfg.overwrite else outputs(), earlier) as items,
    ):
        for item in items:
            if item.excluded:
                plan.row(rpt.blank_row(item.key, status=EXCLUDED, note=item.excluded))
                planned.excluded += 1
                planned.example = planned.example or (item.key, item.excluded)
                continue
            why = other_maker(item, stamp["made_by"]) if item.existing is not None else ""
            if not why and not cfg.reference and trusted(item, stamp["made_by"]):
                r = item.earlier or {}
                plan.row(
                    rpt.blank_row(
                        item.key,
                        status="skipped",
                        width=r["width"],
                        height=r["height"],
                        seconds=0.0,
                        output_bytes=r["output_bytes"],
                        output_md5=r.get("output_md5"),
                        output_tag=r["output_tag"],
                        input_bytes=item.size,
                        input_tag=item.tag or None,
                        **stamp,
                    )
                )
                planned.trusted += 1
            elif why:
                if why.startswith(OTHER_MODEL_WHY) and cfg.other_model == "refuse":
                    planned.refused += 1
                    planned.refused_example = planned.refused_example or (
                        item.key,
                        (item.earlier or {}).get("model") or "?",
                    )
                plan.work(item.key, None, input_tag=item.tag, note=f"{why}; redone")
                planned.redo += 1
            else:
                r = item.earlier or {}
                same_size = (
                    item.existing is not None and r.get("output_bytes") == item.existing.size
                )
                plan.work(
                    item.key,
                    item.existing,
                    r.get("output_md5") if same_size else None,
                    input_tag=item.tag,
                )
                if item.existing is None:
                    planned.to_do += 1
                else:
                    planned.existing += 1
    if partials and not out.is_s3:
        out.remove_partials(partials)
    return planned


@contextlib.contextmanager
def _items(
    cfg: DenoiseConfig, inp: Store, outputs: Iterable[Entry] | None, earlier: Iterable[dict]
) -> Iterator[Iterator[Item]]:
    """The inputs in key order (plan.select), each with its existing output (from the sorted
    output listing) and the earlier report's row. With --format renaming the outputs, the merge
    with the outputs sorts the inputs by output key in a local temporary folder (bounded memory)."""
    items = select(inp.iter_entries(), cfg.include_hidden)
    if cfg.format == KEEP:
        yield with_earlier(with_outputs(items, outputs), earlier)
        return
    with tempfile.TemporaryDirectory(prefix="raydenoise-plan-") as tmp:
        yield with_earlier(
            with_renamed_outputs(items, outputs, cfg.format, open_store(tmp)), earlier
        )
