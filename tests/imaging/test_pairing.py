from collections import Counter

import pytest

from raydenoise.imaging.pairing import file_id, pair_keys, parse_split, split_of

SPLIT = (0.7, 0.2, 0.1)


def test_file_id_strips_only_the_last_extension():
    assert file_id("a/b/1.png") == "a/b/1"
    assert file_id("x.tar.gz") == "x.tar"
    assert file_id("noext") == "noext"


def test_pairs_by_relative_path_not_by_sort_order():
    low = ["1.png", "2.png", "10.png", "sub/3.png"]
    high = ["10.jpg", "2.jpeg", "1.PNG", "sub/3.tif"]
    pairs, rejected = pair_keys(low, high, seed=42, fractions=SPLIT)
    assert not rejected
    got = {p.id: (p.low_key, p.high_key) for p in pairs}
    assert got == {
        "1": ("1.png", "1.PNG"),
        "2": ("2.png", "2.jpeg"),
        "10": ("10.png", "10.jpg"),
        "sub/3": ("sub/3.png", "sub/3.tif"),
    }
    assert [p.id for p in pairs] == ["1", "2", "10", "sub/3"]  # natural order


def test_every_key_is_paired_or_rejected_with_a_reason():
    low = ["a.png", "b.png", "c.png", "c.jpg"]
    high = ["a.png", "d.png", "c.png"]
    pairs, rejected = pair_keys(low, high, seed=0, fractions=SPLIT)
    assert [p.id for p in pairs] == ["a"]
    reasons = {(r.side, r.file): r.reason for r in rejected}
    assert reasons[("low", "b.png")].startswith("no partner")
    assert reasons[("high", "d.png")].startswith("no partner")
    assert reasons[("low", "c.png")].startswith("ambiguous")
    assert reasons[("low", "c.jpg")].startswith("ambiguous")
    assert reasons[("high", "c.png")].startswith("its partner is ambiguous")
    accounted = (
        {("low", p.low_key) for p in pairs} | {("high", p.high_key) for p in pairs} | set(reasons)
    )
    assert accounted == {("low", k) for k in low} | {("high", k) for k in high}


def test_split_is_deterministic_and_stable_when_data_grows():
    ids = [f"img{i}" for i in range(500)]
    first = {i: split_of(i, 42, SPLIT) for i in ids}
    again = {i: split_of(i, 42, SPLIT) for i in ids}
    assert first == again
    grown = [f"img{i}" for i in range(2000)]
    pairs, _ = pair_keys(
        [f"{i}.png" for i in grown], [f"{i}.png" for i in grown], seed=42, fractions=SPLIT
    )
    assert all(first[p.id] == p.split for p in pairs if p.id in first)
    other_seed = {i: split_of(i, 43, SPLIT) for i in ids}
    assert other_seed != first


def test_split_proportions_follow_the_fractions():
    counts = Counter(split_of(f"id-{i}", 42, SPLIT) for i in range(20000))
    for name, frac in zip(("train", "val", "test"), SPLIT):
        assert abs(counts[name] / 20000 - frac) < 0.015
    assert set(Counter(split_of(f"{i}", 1, (1.0, 0.0, 0.0)) for i in range(200))) == {"train"}


@pytest.mark.parametrize("text", ["0.7,0.3", "0.5,0.5,0.5", "a,b,c", "-0.1,0.6,0.5"])
def test_bad_split_text(text):
    with pytest.raises(ValueError, match="--split"):
        parse_split(text)
