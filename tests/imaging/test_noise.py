import numpy as np
import pytest

from raydenoise.imaging.noise import NoiseSpecError, apply_noise, parse_noise


def gray(v: int, n: int = 256) -> np.ndarray:
    return np.full((n, n, 3), v, np.uint8)


def test_gaussian_sigma_matches_request():
    clean = gray(128)
    noisy = apply_noise(clean, parse_noise("gaussian:25"), np.random.default_rng(0))
    sigma = (noisy.astype(np.float64) - clean).std()
    assert abs(sigma - 25) < 0.5, sigma
    assert abs((noisy.astype(np.float64) - clean).mean()) < 0.5


def test_same_seed_same_noise_other_seed_other_noise():
    clean = gray(100, 32)
    spec = parse_noise("poisson-gaussian")
    a = apply_noise(clean, spec, np.random.default_rng(7))
    b = apply_noise(clean, spec, np.random.default_rng(7))
    c = apply_noise(clean, spec, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_poisson_noise_grows_with_brightness():
    spec = parse_noise("poisson-gaussian:peak=30,read=0")
    rng = np.random.default_rng(0)
    dark = apply_noise(gray(40), spec, rng).astype(float).std()
    bright = apply_noise(gray(200), spec, rng).astype(float).std()
    assert bright > 1.8 * dark


def test_low_light_is_far_darker_and_noisy_relative_to_signal():
    rng = np.random.default_rng(0)
    clean = np.clip(np.random.default_rng(1).normal(120, 40, (128, 128, 3)), 0, 255).astype(
        np.uint8
    )
    low = apply_noise(clean, parse_noise("low-light"), rng)
    assert low.mean() < 0.25 * clean.mean()
    flat = apply_noise(gray(128), parse_noise("low-light:exposure=0.2,gamma=2"), rng).astype(float)
    assert flat.std() > 0.5  # shot + read noise present
    assert abs(flat.mean() - 255 * 0.2 * (128 / 255) ** 2) < 1.0


def test_low_light_cast_tints_red_and_blue_per_image_and_keeps_gray_photos():
    spec = parse_noise("low-light:exposure=0.5,gamma=1,peak=100000,read=0,cast=0.5-1.5")
    means = [
        apply_noise(gray(200, 64), spec, np.random.default_rng(s)).reshape(-1, 3).mean(0)
        for s in range(6)
    ]
    ratios = np.array([m / m[1] for m in means])  # green is never cast
    assert np.all((ratios[:, [0, 2]] > 0.45) & (ratios[:, [0, 2]] < 1.55))
    assert ratios[:, 0].std() > 0.05 and not np.allclose(ratios[:, 0], ratios[:, 2], atol=0.02)
    plain = parse_noise("low-light:exposure=0.5,gamma=1,peak=100000,read=0")
    base = apply_noise(gray(200, 64), plain, np.random.default_rng(0)).reshape(-1, 3).mean(0)
    assert np.allclose(base / base[1], 1.0, atol=0.02)
    mono = apply_noise(np.full((32, 32, 1), 200, np.uint8), spec, np.random.default_rng(0))
    assert mono.shape == (32, 32, 1)


@pytest.mark.parametrize(
    "text, match",
    [
        ("salt", "unknown noise kind"),
        ("gaussian", "needs a sigma"),
        ("gaussian:abc", "must be a number"),
        ("low-light:brightness=2", "takes"),
        ("poisson-gaussian:peak=0", "must be > 0"),
        ("low-light:cast=0-1.2", "must be > 0"),
        ("gaussian:-3", ">= 0"),
    ],
)
def test_bad_specs_have_clear_errors(text, match):
    with pytest.raises(NoiseSpecError, match=match):
        parse_noise(text)


def test_spec_round_trips_to_text():
    assert str(parse_noise("gaussian:25")) == "gaussian:25"
    assert str(parse_noise("low-light:gamma=2,exposure=0.1")) == "low-light:exposure=0.1,gamma=2"


def test_ranges_draw_a_level_per_image_and_mixes_pick_a_kind():
    from raydenoise.imaging.noise import degrade, parse_degrade

    spec = parse_noise("gaussian:0-50")
    assert spec.params["sigma"] == (0.0, 50.0) and str(spec) == "gaussian:0-50"
    rng = np.random.default_rng(0)
    sigmas = [(apply_noise(gray(128, 64), spec, rng).astype(float) - 128).std() for _ in range(40)]
    assert min(sigmas) < 10 and max(sigmas) > 40 and all(s < 52 for s in sigmas)
    mix = parse_degrade("gaussian:5-50, poisson-gaussian:peak=5-60,read=2")
    assert [m.kind for m in mix] == ["gaussian", "poisson-gaussian"]
    assert mix[1].params == {"peak": (5.0, 60.0), "read": 2.0}
    a = [degrade(gray(100, 16), mix, np.random.default_rng(s)) for s in range(6)]
    b = [degrade(gray(100, 16), mix, np.random.default_rng(s)) for s in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # reproducible from the seed
    assert len({x.tobytes() for x in a}) == 6  # and different between draws
    assert str(parse_noise("gaussian:25-25")) == "gaussian:25"  # an empty range is a value


@pytest.mark.parametrize(
    "text, match",
    [
        ("gaussian:50-10", "LO-HI"),
        ("gaussian:1-2-3", "number"),
        ("poisson-gaussian:peak=0-5", "must be > 0"),
        ("", "unknown noise kind"),
        (" , ", "one or more"),
    ],
)
def test_bad_ranges_and_mixes_have_clear_errors(text, match):
    from raydenoise.imaging.noise import parse_degrade

    with pytest.raises(NoiseSpecError, match=match):
        parse_degrade(text) if "," in text else parse_noise(text)
