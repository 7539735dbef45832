"""Keys and file names: escaped text for names that are not UTF-8, temporary names of atomic writes, and which files a job leaves out (hidden, partial) and why."""

from __future__ import annotations

import os
import uuid

# Local writes go to a hidden temporary name beside the target and are renamed into place, so a
# reader never sees a partial file under its final name (a full disk or a kill mid-write leaves
# only the temporary). S3 PUTs are atomic by themselves.
TMP_MARK = ".raydenoise-tmp-"


def escape_name(name: str) -> str:
    r"""The key of a local file name (see above); names of valid UTF-8 without a backslash are unchanged."""
    if not any(c == "\\" or "\udc80" <= c <= "\udcff" for c in name):
        return name
    return "".join(
        "\\\\" if c == "\\" else f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c
        for c in name
    )


def unescape_name(key: str) -> str:
    r"""The file name of a key (inverse of escape_name; a backslash not followed by a backslash or 'xNN'
    stays a backslash)."""
    if "\\" not in key:
        return key
    out, i = [], 0
    while i < len(key):
        c = key[i]
        if c == "\\" and key[i + 1 : i + 2] == "\\":
            out.append("\\")
            i += 2
        elif (
            c == "\\"
            and key[i + 1 : i + 2] == "x"
            and _is_hex(key[i + 2 : i + 4])
            and int(key[i + 2 : i + 4], 16) >= 0x80
        ):
            out.append(chr(0xDC00 + int(key[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def is_hidden(key: str) -> bool:
    """True when any part of a '/'-separated key starts with '.' (``.x.png``, ``a/.b/c.png``)."""
    return any(part.startswith(".") for part in key.split("/"))


def temp_name(name: str, folder: str = ".") -> str:
    """The hidden temporary name a local write of ``name`` goes through: ``.NAME`` + TMP_MARK + 8
    random hex digits, with NAME cut short (by bytes) so the whole stays within the folder's
    name-length limit (255 bytes on ext4): a legal 255-byte name must stay writable."""
    suffix = f"{TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    room = limit - 1 - len(suffix)
    raw = os.fsencode(name)
    return "." + os.fsdecode(raw[:room] if len(raw) > room else raw) + suffix


def is_partial(key: str) -> bool:
    """True for a temporary file left by an interrupted raydenoise write."""
    return TMP_MARK in key.rsplit("/", 1)[-1]


PARTIAL_REASON = "temporary file of an interrupted raydenoise write"


HIDDEN_REASON = "hidden (a name starting with '.'); pass --include-hidden to use it"


def left_out_reason(key: str, include_hidden: bool) -> str:
    """Why a listed key is not an input ("" when it is): temporary files of interrupted
    raydenoise writes always, hidden ones (a part starting with '.') unless ``include_hidden``."""
    if is_partial(key):
        return PARTIAL_REASON
    if is_hidden(key) and not include_hidden:
        return HIDDEN_REASON
    return ""


def partition_hidden(
    keys: list[str], include_hidden: bool
) -> tuple[list[str], list[tuple[str, str]]]:
    """Split a listing into keys to use and (key, reason) for those left out (left_out_reason).
    Nothing is dropped without a reason."""
    kept, left_out = [], []
    for key in keys:
        why = left_out_reason(key, include_hidden)
        if why:
            left_out.append((key, why))
        else:
            kept.append(key)
    return kept, left_out
