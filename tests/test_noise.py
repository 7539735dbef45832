import numpy as np
import pytest

from raydenoise.noise import NoiseSpecError, apply_noise, parse_noise


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
    clean = np.clip(np.random.default_rng(1).normal(120, 40, (128, 128, 3)), 0, 255).astype(np.uint8)
    low = apply_noise(clean, parse_noise("low-light"), rng)
    assert low.mean() < 0.25 * clean.mean()
    flat = apply_noise(gray(128), parse_noise("low-light:exposure=0.2,gamma=2"), rng).astype(float)
    assert flat.std() > 0.5  # shot + read noise present
    assert abs(flat.mean() - 255 * 0.2 * (128 / 255) ** 2) < 1.0


@pytest.mark.parametrize(
    "text, match",
    [
        ("salt", "unknown noise kind"),
        ("gaussian", "needs a sigma"),
        ("gaussian:abc", "must be a number"),
        ("low-light:brightness=2", "takes"),
        ("poisson-gaussian:peak=0", "must be > 0"),
        ("gaussian:-3", ">= 0"),
    ],
)
def test_bad_specs_have_clear_errors(text, match):
    with pytest.raises(NoiseSpecError, match=match):
        parse_noise(text)


def test_spec_round_trips_to_text():
    assert str(parse_noise("gaussian:25")) == "gaussian:25"
    assert str(parse_noise("low-light:gamma=2,exposure=0.1")) == "low-light:exposure=0.1,gamma=2"
