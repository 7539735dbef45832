import json

import numpy as np
import pytest
from PIL import Image

from raydenoise.imaging.images import ImageError
from raydenoise.jobs.synth import SynthConfig, run_synth

from conftest import png_bytes, rgb, write


def load(path):
    return np.asarray(Image.open(path)).astype(np.float64)


def test_default_samples_gaussian_sigma_and_reproducibility(tmp_path):
    res = run_synth(
        SynthConfig(out=str(tmp_path / "a"), noise="gaussian:25", limit=3, seed=5),
        log=lambda m: None,
    )
    assert len(res.written) == 3 and not res.skipped
    diffs = []
    for name in res.written:
        low, high = (
            load(tmp_path / "a/low" / f"{name}.png"),
            load(tmp_path / "a/high" / f"{name}.png"),
        )
        assert low.shape == high.shape and low.shape[2] == 3
        mid = (high > 40) & (high < 215)  # away from clipping at 0 and 255
        diffs.append((low - high)[mid])
    sigma = np.concatenate(diffs).std()
    assert abs(sigma - 25) < 1.0, sigma
    run_synth(
        SynthConfig(out=str(tmp_path / "b"), noise="gaussian:25", limit=3, seed=5),
        log=lambda m: None,
    )
    run_synth(
        SynthConfig(out=str(tmp_path / "c"), noise="gaussian:25", limit=3, seed=6),
        log=lambda m: None,
    )
    name = res.written[0]
    a, b, c = ((tmp_path / d / "low" / f"{name}.png").read_bytes() for d in "abc")
    assert a == b and a != c
    record = json.loads((tmp_path / "a/synth.json").read_text())
    assert record["config"]["noise"] == "gaussian:25" and record["written"] == 3


def test_low_light_mean_far_below_clean(tmp_path):
    res = run_synth(SynthConfig(out=str(tmp_path), noise="low-light", limit=4), log=lambda m: None)
    for name in res.written:
        assert (
            load(tmp_path / "low" / f"{name}.png").mean()
            < 0.3 * load(tmp_path / "high" / f"{name}.png").mean()
        )


def test_folder_source_with_crop_resize_and_a_bad_file(tmp_path, capsys):
    clean = tmp_path / "clean"
    write(clean / "a.png", png_bytes(rgb(60, 80)))
    write(clean / "sub/b.png", png_bytes(rgb(40, 50, seed=1)))
    write(clean / "broken.jpg", b"not really a jpeg")
    out = tmp_path / "out"
    res = run_synth(
        SynthConfig(
            out=str(out), clean=str(clean), noise="poisson-gaussian", max_side=40, crop=(20, 24)
        ),
        log=lambda m: None,
    )
    assert sorted(res.written) == ["a", "sub/b"]
    assert load(out / "high/sub/b.png").shape == (20, 24, 3)
    record = json.loads((out / "synth.json").read_text())
    assert (
        record["skipped"][0]["file"].endswith("broken")
        and "not an image" in record["skipped"][0]["reason"]
    )
    assert "skipped" in capsys.readouterr().err


def test_nothing_usable_is_an_error(tmp_path):
    write(tmp_path / "clean/x.png", b"junk")
    with pytest.raises(ImageError, match="none of the 1"):
        run_synth(
            SynthConfig(out=str(tmp_path / "o"), clean=str(tmp_path / "clean"), noise="gaussian:5"),
            log=lambda m: None,
        )


def test_clean_files_that_share_an_id_are_listed_not_overwritten(tmp_path):
    clean = tmp_path / "clean"
    for name in ("img.png", "img.bmp", "other.png"):
        im = Image.fromarray(rgb(20, 24, seed=len(name)))
        im.save(clean / name if clean.exists() else (clean.mkdir() or clean / name))
    res = run_synth(
        SynthConfig(out=str(tmp_path / "out"), clean=str(clean), noise="gaussian:10"),
        log=lambda m: None,
    )
    assert res.written == ["other"] and sorted(
        p.name for p in (tmp_path / "out/low").iterdir()
    ) == ["other.png"]
    record = json.loads((tmp_path / "out/synth.json").read_text())
    ambiguous = [s for s in record["skipped"] if "ambiguous" in s["reason"]]
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in ambiguous) == ["img.bmp", "img.png"]
    assert record["written"] == 1
