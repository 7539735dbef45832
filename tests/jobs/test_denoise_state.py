"""One image's typed state (jobs/denoise/state.py): it crosses Ray Data batches between the
staged pipeline's steps unchanged, 16-bit pixels and metadata bytes included. No Ray."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from raydenoise.jobs.denoise.state import (
    ImageState,
    _new_state,
    _not_attempted,
    _pack,
    _short_circuit,
    _unpack,
)


def _same(a: ImageState, b: ImageState) -> bool:
    for f in fields(ImageState):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif isinstance(x, float) and math.isnan(x):
            if not math.isnan(y):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_states_survive_a_batch_round_trip_with_16_bit_pixels_and_metadata():
    rng = np.random.default_rng(0)
    a = _new_state("a/1.png", False, {"listed_bytes": 10, "listed_tag": "t", "note": "n"})
    a.image = rng.integers(0, 65535, (5, 7, 3), dtype=np.uint16)
    a.output = a.image.copy()
    a.alpha, a.has_alpha = rng.integers(0, 65535, (5, 7), dtype=np.uint16), True
    a.exif, a.icc, a.quality, a.subsampling = b"Exif\x00\x01", b"\x00icc", 87, 2
    a.input_noise, a.sigma = 12.5, 12.5
    b = _new_state("b.jpg", True)
    b.image = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    b.error = "not a usable image: truncated"
    states = [a, b]
    back = _unpack(_pack(states))
    assert len(back) == 2 and all(_same(x, y) for x, y in zip(states, back))
    assert back[0].image.dtype == np.uint16 and back[1].image.dtype == np.uint8


def test_after_a_storage_failure_the_rest_of_the_batch_is_not_attempted():
    ok, failed, bad = _new_state("a", False), _new_state("b", False), _new_state("c", False)
    failed.fatal = "s3://b: connection refused"
    bad.error = "not a usable image"
    _short_circuit([ok, failed, bad])
    assert ok.fatal == "not attempted after: s3://b: connection refused"
    assert bad.fatal == "" and bad.failed() and not bad.needs_model()
    skipped = _not_attempted("d", True, "disk full")
    assert skipped.skip and skipped.fatal == "not attempted after: disk full"
    assert not _new_state("e", True).needs_model() and _new_state("f", False).needs_model()
