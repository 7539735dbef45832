"""The blind noise-level estimate, and the noise kinds and network that use it."""

import numpy as np
import pytest
import skimage.data

from raydenoise.imaging.noise import apply_noise, degrade_with_level, parse_degrade, parse_noise
from raydenoise.imaging.noise_level import (
    PATCH,
    TEXTURE_THRESHOLD,
    estimate_noise,
    estimate_sigma,
    strength_problem,
)


def photos():
    return [
        skimage.data.astronaut()[::2, ::2],
        skimage.data.coffee()[::2, ::2],
        skimage.data.chelsea(),
    ]


def test_the_texture_threshold_is_the_gamma_percentile_it_stands_for():
    from scipy.stats import gamma

    r, terms = PATCH * PATCH, 4 * PATCH * (PATCH - 1)
    assert (
        pytest.approx(gamma.ppf(0.99, a=r / 2, scale=2 * terms / r), rel=1e-12) == TEXTURE_THRESHOLD
    )


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_estimate_is_within_15_percent_of_the_true_sigma(sigma):
    for i, clean in enumerate(photos()):
        noisy = apply_noise(clean, parse_noise(f"gaussian:{sigma}"), np.random.default_rng(i))
        assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.15)


def test_the_report_reading_is_close_to_the_full_one_and_the_texture_measure_is_exact():
    from raydenoise.imaging import noise_level

    for i, clean in enumerate(photos()):
        for sigma in (0, 5, 25):
            noisy = apply_noise(clean, parse_noise(f"gaussian:{sigma}"), np.random.default_rng(i))
            full = estimate_sigma(noisy)
            report = estimate_sigma(noisy, noise_level.REPORT_PATCHES)
            assert abs(report - full) <= max(0.035 * full, 0.2), (i, sigma, full, report)
    # the gradient energy of flattened windows equals the square-and-sum over each window
    cols = np.random.default_rng(0).random((50, 49), np.float32) * 255
    x = cols.reshape(-1, 7, 7)
    naive = np.square(np.diff(x, axis=2)).sum(axis=(1, 2)) + np.square(np.diff(x, axis=1)).sum(
        axis=(1, 2)
    )
    assert np.allclose(noise_level._gradient_energy(cols), naive, rtol=1e-5)


def test_clean_photos_read_almost_no_noise_and_grayscale_reads_like_its_channel():
    for clean in photos():
        assert estimate_sigma(clean) < 2.5
    gray = apply_noise(
        skimage.data.camera()[..., None], parse_noise("gaussian:20"), np.random.default_rng(0)
    )[..., 0]
    assert estimate_sigma(gray) == pytest.approx(20, rel=0.15)
    assert estimate_sigma(np.repeat(gray[..., None], 3, axis=2)) == pytest.approx(
        estimate_sigma(gray), rel=1e-6
    )


def test_estimate_contracts():
    assert estimate_sigma(np.zeros((5, 5, 3), np.uint8)) == 0.0  # smaller than one patch
    assert estimate_sigma(np.full((64, 64, 3), 128, np.uint8)) == 0.0  # flat: no noise
    with pytest.raises(ValueError, match="image"):
        estimate_sigma(np.zeros((2, 8, 8, 3)))
    rng = np.random.default_rng(0)
    assert estimate_noise(rng.normal(0, 12, (96, 96, 3))) == pytest.approx(12, rel=0.1)
    assert strength_problem(1.0, None) is None and "--strength" in strength_problem(-0.5, None)
    assert "--sigma" in strength_problem(1.0, float("inf"))


def test_camera_noise_is_correlated_signal_dependent_and_leaves_the_photo_its_own_target():
    clean = skimage.data.coffee()[::2, ::2]
    noisy = apply_noise(
        clean, parse_noise("camera:peak=60,read=1"), np.random.default_rng(0)
    ).astype(float)
    n = noisy - clean
    assert abs(n.mean()) < 1.5  # zero-mean around the clean photo (up to clipping)
    corr = np.corrcoef(n[:, :-1, 1].ravel(), n[:, 1:, 1].ravel())[0, 1]
    assert corr > 0.2  # demosaicking shares noise between neighbours
    gauss = (
        apply_noise(clean, parse_noise("gaussian:10"), np.random.default_rng(0)).astype(float)
        - clean
    )
    assert abs(np.corrcoef(gauss[:, :-1, 1].ravel(), gauss[:, 1:, 1].ravel())[0, 1]) < 0.05
    dark, bright = clean.mean(axis=2) < 60, clean.mean(axis=2) > 180
    assert n[dark].std() != pytest.approx(
        n[bright].std(), rel=0.2
    )  # depends on the signal (and the tone curve)


def test_jpeg_kinds_and_levels():
    clean = skimage.data.astronaut()[::2, ::2]
    rng = np.random.default_rng(0)
    q30 = apply_noise(clean, parse_noise("jpeg:q=30"), rng)
    assert not np.array_equal(q30, clean) and np.abs(q30.astype(float) - clean).mean() < 8
    _noisy, level = degrade_with_level(clean, parse_degrade("gaussian:20,jpeg=80"), rng)
    assert (
        3 < level < 25
    )  # JPEG removed part of the noise: the level is measured, not the requested 20
    _, level = degrade_with_level(clean, parse_degrade("gaussian:20"), rng)
    assert level == 20
    assert str(parse_noise("gaussian:0-25,jpeg=75-95")) == "gaussian:jpeg=75-95,sigma=0-25"


@pytest.mark.parametrize(
    "text, match",
    [
        ("jpeg", "quality"),
        ("jpeg:q=0", "1 to 100"),
        ("camera:jpeg=120", "1 to 100"),
        ("camera:gain=2", "takes"),
    ],
)
def test_a_bad_degradation_is_refused_saying_why(text, match):

    with pytest.raises(ValueError, match=match):
        parse_degrade(text)


def test_the_estimate_runs_its_blas_products_on_one_thread(monkeypatch):
    """On a machine whose cores are busy, OpenBLAS's threads turned one estimate into 7-12 s;
    the estimate limits numpy's BLAS to one thread, and restores the caller's setting after."""
    from threadpoolctl import threadpool_info

    from raydenoise.imaging import noise_level

    numpy_blas = {
        lib["filepath"]
        for lib in threadpool_info()
        if lib["user_api"] == "blas" and "numpy" in lib["filepath"]
    }
    assert numpy_blas  # numpy's wheel bundles its OpenBLAS

    def threads():
        return {lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in numpy_blas}

    seen = []
    real = noise_level._image_level
    monkeypatch.setattr(
        noise_level, "_image_level", lambda *args: seen.append(threads()) or real(*args)
    )
    before = threads()
    assert noise_level.estimate_sigma(np.full((32, 32), 128.0)) >= 0.0
    assert seen == [{1}] and threads() == before


def test_a_subsets_covariance_updated_by_the_rows_that_change_equals_one_computed_afresh():
    """Later rounds of the weak-texture selection change few patches: the covariance updated by
    the rows entering and leaving gives the variance a fresh computation gives (and a subset
    that changed by more than a quarter is computed afresh)."""
    from raydenoise.imaging import noise_level

    rng = np.random.default_rng(3)
    cols = (rng.normal(100, 8, (4000, 49)) + rng.normal(0, 30, (4000, 1))).astype(np.float32)
    subset = noise_level._SubsetCovariance(cols)
    mask = rng.random(4000) < 0.6
    for step in range(5):
        got = subset.smallest_variance(mask)
        fresh = noise_level._smallest_variance(cols[mask])
        assert got == pytest.approx(fresh, rel=1e-4), step
        assert 50 < got < 80  # the noise's variance (8^2), not the rows' offsets
        flip = rng.random(4000) < (0.02 if step < 3 else 0.5)  # small changes, then a large one
        mask = mask ^ flip
    # a small change is an update about the same centre, a large one a fresh computation
    subset.smallest_variance(mask)  # half the rows changed last: computed afresh
    centre = subset.centre
    small = mask.copy()
    small[np.flatnonzero(small)[:5]] = False
    assert subset.smallest_variance(small) == pytest.approx(
        noise_level._smallest_variance(cols[small]), rel=1e-4
    )
    assert subset.centre is centre
    subset.smallest_variance(~small)
    assert subset.centre is not centre
