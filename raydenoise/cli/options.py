"""A command's options built from its job's config dataclass (jobs/options.py): every field made
with ``opt()`` becomes a flag with its help, default, type and choices; ``config_values`` reads
them back from the parsed arguments."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from ..jobs.options import by_annotation, option_of


def add_options(p: argparse.ArgumentParser, config: type, overrides: dict | None = None) -> None:
    """One flag per option field of ``config``, in field order. ``overrides``: {field: {argparse
    keyword: value}} for a command that shows an option differently (another default's help)."""
    for f in fields(config):
        o = option_of(f)
        if o is None:
            continue
        kw: dict[str, Any] = {"help": o.help, "dest": f.name}
        if f.type == "bool" or f.type is bool:
            kw["action"] = "store_true"
        else:
            value_type = o.type or by_annotation(str(f.type))
            if value_type is not None:
                kw["type"] = value_type
            if o.choices:
                kw["choices"] = o.choices
            if o.metavar:
                kw["metavar"] = o.metavar
            if o.required:
                kw["required"] = True
            else:
                kw["default"] = None if f.default is MISSING else f.default
        kw.update((overrides or {}).get(f.name, {}))
        p.add_argument(o.flag or "--" + f.name.replace("_", "-"), **kw)


def config_values(config: type, args: argparse.Namespace) -> dict[str, Any]:
    """{field: value} of every option field of ``config`` that the parsed ``args`` hold."""
    return {
        f.name: getattr(args, f.name)
        for f in fields(config)
        if option_of(f) is not None and hasattr(args, f.name)
    }
