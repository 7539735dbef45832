"""Training batches: patches from memory, noise synthesized per patch, reproducible val inputs."""

import threading

import numpy as np
import pytest

from raydenoise.imaging.noise import parse_degrade
from raydenoise.imaging.patches import (
    MemoryPatches,
    augment_pair,
    prefetch,
    steps_per_epoch,
    val_input,
)


def photos(n=3, h=40, w=56):
    rng = np.random.default_rng(7)
    return [(None, rng.integers(30, 220, (h, w, 3), dtype=np.uint8)) for _ in range(n)]


def batches(mem, epoch=0, rank=0, seed=0, specs="gaussian:0-50", steps=3, patch=16, levels=False):
    out = list(
        mem.batches(
            steps=steps,
            batch_size=4,
            patch=patch,
            seed=seed,
            epoch=epoch,
            rank=rank,
            specs=parse_degrade(specs) if specs else None,
        )
    )
    return out if levels else [(low, high) for low, high, _ in out]


def noise_std(low, high):
    return (low.astype(float) - high.astype(float)).reshape(len(low), -1).std(axis=1)


def test_degradations_are_fresh_every_step_and_epoch_and_reproducible_from_the_seed():
    mem = MemoryPatches(photos())
    a, again = batches(mem), batches(mem)
    for (la, ha), (lb, hb) in zip(a, again):  # same seed, epoch and rank: identical
        assert np.array_equal(la, lb) and np.array_equal(ha, hb)
    (l0, h0), (l1, h1) = a[0], a[1]
    assert not np.array_equal(l0 - h0.astype(int), l1 - h1.astype(int))  # another step: other noise
    for other in (batches(mem, epoch=1), batches(mem, seed=1), batches(mem, rank=1)):
        assert not any(np.array_equal(x[0], y[0]) for x, y in zip(a, other))
    assert all(
        low.shape == high.shape == (4, 16, 16, 3) and low.dtype == np.uint8 for low, high in a
    )


def test_a_sigma_range_gives_every_patch_its_own_level():
    mem = MemoryPatches(photos())
    stds = np.concatenate([noise_std(low, high) for low, high in batches(mem, steps=8)])
    assert (
        stds.min() < 12 and stds.max() > 35
    )  # sigma drawn from 0-50 per patch (clipping lowers it a bit)
    fixed = np.concatenate(
        [noise_std(low, high) for low, high in batches(mem, specs="gaussian:25", steps=8)]
    )
    assert fixed.std() < 1.5 and abs(fixed.mean() - 25) < 2


def test_a_mix_uses_every_kind():
    mem = MemoryPatches(photos())
    lows = [low for low, _ in batches(mem, specs="gaussian:40,low-light", steps=8)]
    means = np.concatenate([low.reshape(len(low), -1).mean(axis=1) for low in lows])
    assert (means < 60).any() and (
        means > 90
    ).any()  # darkened low-light patches and bright Gaussian ones


def test_paired_patches_crop_both_sides_alike():
    rng = np.random.default_rng(0)
    high = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    low = 255 - high
    mem = MemoryPatches([(low, high)])
    for lo, hi in batches(mem, specs=None, steps=2, patch=12):
        assert np.array_equal(lo, 255 - hi)


def test_small_images_are_padded_and_full_images_are_kept():
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    low, high = augment_pair(None, tiny, 16, rng)
    assert low is None and high.shape == (16, 16, 3)
    _, portrait = augment_pair(None, tiny.transpose(1, 0, 2), None, rng)
    assert portrait.shape == (5, 7, 3)  # landscape, uncropped


def test_epoch_length_and_cycling():
    assert steps_per_epoch(100, 1, 2, 8) == 7  # ceil(100 / 16)
    assert steps_per_epoch(100, 4, 1, 8) == 50
    assert steps_per_epoch(1, 1, 4, 8) == 1
    mem = MemoryPatches(photos(n=2))
    assert len(batches(mem, steps=5)) == 5  # 20 patches from 2 images


def test_val_inputs_depend_only_on_the_image_id():
    specs = parse_degrade("gaussian:0-50")
    high = photos(1)[0][1]
    a, b = val_input("a/1", high, specs), val_input("a/1", high, specs)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, val_input("a/2", high, specs))


def test_prefetch_passes_items_errors_and_stops_early():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetch(failing()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for i in prefetch(endless()):
        if i == 3:
            break
    assert not any(t.name == "raydenoise-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10


def test_a_share_of_synthesized_patches_is_grayscale_with_the_same_noise_in_every_channel():
    from raydenoise.imaging.noise import parse_degrade
    from raydenoise.imaging.patches import synthesize_inputs

    rng = np.random.default_rng(0)
    highs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(400)]
    cleans, lows, levels = synthesize_inputs(
        highs, parse_degrade("gaussian:25"), np.random.default_rng(1), gray_fraction=0.25
    )
    assert levels.shape == (400,) and (levels == 25).all()
    gray = [i for i, c in enumerate(cleans) if (c == c[..., :1]).all()]
    assert 60 < len(gray) < 140  # ~25% of 400
    for i in gray:
        assert (lows[i] == lows[i][..., :1]).all() and not (lows[i] == cleans[i]).all()
    for i in set(range(400)) - set(gray):
        assert (cleans[i] == highs[i]).all() and not (lows[i] == lows[i][..., :1]).all()
    none, _, _ = synthesize_inputs(
        highs[:50], parse_degrade("gaussian:25"), np.random.default_rng(1), gray_fraction=0
    )
    assert all((a == b).all() for a, b in zip(none, highs[:50]))


def test_every_patch_comes_with_the_level_of_its_noise():
    mem = MemoryPatches(photos(h=64, w=64))
    for low, high, levels in batches(mem, specs="gaussian:0-50", steps=4, patch=48, levels=True):
        assert levels.dtype == np.float32 and levels.shape == (4,)
        # the level is the sigma drawn for the patch: the measured spread follows it (clipping aside)
        assert np.allclose(noise_std(low, high), levels, atol=0.15 * levels.max() + 1)
    for _, _, levels in batches(mem, specs="gaussian:0", steps=2, patch=48, levels=True):
        assert (levels == 0).all()  # clean patches: level 0
    camera = [
        lv
        for _, _, lvs in batches(mem, specs="camera:peak=30", steps=3, patch=48, levels=True)
        for lv in lvs
    ]
    assert min(camera) > 0.5  # measured from the noise itself (estimate_noise), never a made-up 0
    rng = np.random.default_rng(0)
    high = rng.integers(60, 200, (40, 40, 3), dtype=np.uint8)
    low = np.clip(high + rng.normal(0, 10, high.shape), 0, 255).astype(np.uint8)
    for _, _, levels in MemoryPatches([(low, high)]).batches(
        steps=1, batch_size=2, patch=32, seed=0, epoch=0, rank=0, specs=None
    ):
        assert np.allclose(levels, 10, rtol=0.2)  # ingested pairs: the level of input minus target


def test_without_levels_the_patches_are_the_same_and_no_level_is_measured():
    mem = MemoryPatches(photos(h=48, w=48))
    spec = "gaussian:0-50,camera:peak=30-300,jpeg=60-90"
    with_levels, without = (
        list(
            mem.batches(
                steps=3,
                batch_size=4,
                patch=32,
                seed=0,
                epoch=0,
                rank=0,
                specs=parse_degrade(spec),
                levels=flag,
            )
        )
        for flag in (True, False)
    )
    for (la, ha, lv), (lb, hb, none) in zip(with_levels, without):
        assert (
            np.array_equal(la, lb) and np.array_equal(ha, hb) and lv.shape == (4,) and none is None
        )


def turns(thumb):
    """The 8 flips and rotations of a (C, S, S) thumbnail."""
    out = []
    for k in range(4):
        t = np.rot90(thumb, k, axes=(1, 2))
        out += [t, t[:, :, ::-1], t[:, ::-1]]
    return out


def test_a_global_network_gets_the_whole_inputs_thumbnail_turned_like_its_patch_and_synthetic_images_mix_in():
    from raydenoise.imaging.images import area_thumbnail

    rng = np.random.default_rng(3)
    real = [
        (
            rng.integers(0, 40, (40, 56, 3), dtype=np.uint8),
            rng.integers(100, 140, (40, 56, 3), dtype=np.uint8),
        )
        for _ in range(3)
    ]
    clean = [
        np.full((48, 64, 3), 230, np.uint8)
    ]  # synthetic: bright clean images, darkened on the fly
    mem = MemoryPatches(real, clean, synthetic_share=0.5)
    thumbs = [area_thumbnail(low, 8) for low, _ in real]
    seen_real = seen_synthetic = 0
    for low, high, ctx in mem.batches(
        steps=10,
        batch_size=4,
        patch=16,
        seed=0,
        epoch=0,
        rank=0,
        specs=parse_degrade("low-light:exposure=0.1,gamma=1,peak=1e6,read=0"),
        levels=False,
        context=8,
    ):
        assert ctx.shape == (4, 3, 8, 8) and ctx.dtype == np.float32
        for lo, hi, c in zip(low, high, ctx):
            if (hi == 230).all():  # a synthetic pair: its input made from the whole clean image
                seen_synthetic += 1
                assert abs(int(np.median(lo)) - 23) <= 1 and np.allclose(c, 23 / 255, atol=2 / 255)
            else:  # a real pair: the thumbnail of its whole input, turned as the patch was
                seen_real += 1
                assert any(np.allclose(c, t, atol=1e-6) for th in thumbs for t in turns(th))
    assert seen_real > 5 and seen_synthetic > 5
    # without a context the mix is the same: real inputs kept, the synthetic ones made per patch
    for low, high, _ in mem.batches(
        steps=5,
        batch_size=4,
        patch=16,
        seed=0,
        epoch=0,
        rank=0,
        specs=parse_degrade("gaussian:0"),
        levels=False,
    ):
        for lo, hi in zip(low, high):
            assert (lo == hi).all() == (hi == 230).all()
