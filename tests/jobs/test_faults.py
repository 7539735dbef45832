"""Fault injection: every case of issue 9, rerun as a careful and a hostile user would.

Each test checks that nothing is lost, every input is accounted for in the report, the message
is clear (one line, no traceback) and a rerun completes the job. A full disk is a size-limited
tmpfs where user namespaces allow mounting one (and a storage that fails writes otherwise); a
dead S3 server is a second SeaweedFS stopped mid-run and started again on its data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from raydenoise.imaging.images import decode_rgb8
from raydenoise.jobs.denoise import DenoiseConfig, DenoiseError, run_denoise
from raydenoise.models.architectures import build_model
from raydenoise.models.artifacts import CONFIG, WEIGHTS, save_model_dir

from conftest import (
    BUCKET,
    PeakConcurrency,
    png16_bytes,
    png_bytes,
    rgb,
    run_cli,
    start_weed,
    stop_weed,
    write,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(s3_server, ray_cluster):
    return ray_cluster


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    save_model_dir(d, build_model("seed-ae", 8).eval(), {"model": "seed-ae", "width": 8})
    return d


def noisy_images(folder: Path, n: int, h: int = 40, w: int = 56) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        data = png_bytes(rgb(h, w, seed=i))
        write(folder / f"img{i:02d}.png", data)
        out[f"img{i:02d}.png"] = data
    return out


def ingested_pairs(root: Path, n: int, h: int, w: int, split, **kw) -> str:
    """n generated low/high pairs under root, ingested to root/ds; returns the data set path."""
    from raydenoise.jobs.ingest import IngestConfig, run_ingest

    for i in range(n):
        write(root / "low" / f"{i}.png", png_bytes(rgb(h, w, seed=i)))
        write(root / "high" / f"{i}.png", png_bytes(rgb(h, w, seed=50 + i)))
    run_ingest(
        IngestConfig(
            low=str(root / "low"), high=str(root / "high"), out=str(root / "ds"), split=split, **kw
        ),
        log=lambda m: None,
    )
    return str(root / "ds")


def report(folder: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(folder / "report.parquet").to_pylist()}


def denoise(*args: str, address: str | None = None, timeout: int = 300, env: dict | None = None):
    return run_cli("denoise", *args, address=address, timeout=timeout, env=env)


def clean_failure(r, *needles: str) -> None:
    """Exit 1, a message naming the problem, no traceback."""
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in r.stderr, (n, r.stderr[-2000:])


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def all_outputs_complete(out: Path) -> None:
    """Every file under its final name decodes; no temporary file is left behind."""
    for p in out.rglob("*"):
        if p.is_file() and "_report" not in p.parts:
            assert ".raydenoise-tmp-" not in p.name, p
            decode_rgb8(p.read_bytes())


# ----------------------------------------------------------------------------- 1. partial outputs


def test_1_truncated_output_is_redone_on_resume_with_and_without_reference(
    cluster, model_dir, tmp_path
):
    inputs = noisy_images(tmp_path / "in", 5)
    for k, v in inputs.items():
        write(tmp_path / "ref" / k, v)
    args = [
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
    ]
    assert denoise(*args, address=cluster).returncode == 0
    for ref in ([], ["--reference", str(tmp_path / "ref")]):
        leftover = write(
            tmp_path / "out" / ".img03.png.raydenoise-tmp-0123abcd", b"\x89PNG partial"
        )  # a killed write
        victim = tmp_path / "out" / "img02.png"
        victim.write_bytes(
            victim.read_bytes()[: victim.stat().st_size // 2]
        )  # a disk that filled mid-write
        r = denoise(*args, *ref, address=cluster)
        assert r.returncode == 0, r.stderr
        rows = report(tmp_path / "out" / "_report")
        assert (
            rows["img02.png"]["status"] == "ok"
            and "incomplete or damaged" in rows["img02.png"]["note"]
        )
        assert all(rows[k]["status"] == "skipped" for k in inputs if k != "img02.png")
        assert all(
            rows[k]["width"] == 56 and rows[k]["height"] == 40 for k in inputs
        )  # facts of skipped rows kept
        if ref:
            assert all(rows[k]["psnr"] is not None for k in inputs)
        all_outputs_complete(tmp_path / "out")
        assert not leftover.exists()


# ----------------------------------------------------------------------------- 2. symlinked output


def test_2_output_symlinked_to_input_is_refused_and_inputs_untouched(cluster, model_dir, tmp_path):
    noisy_images(tmp_path / "in", 3)
    (tmp_path / "link").symlink_to(tmp_path / "in")
    before = digest(tmp_path / "in")
    for out in (tmp_path / "link", tmp_path / "in" / ".." / "link" / "sub"):
        r = denoise(
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--model",
            str(model_dir),
            "--overwrite",
            address=cluster,
        )
        clean_failure(r, "is inside --input")
    r = denoise(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
        "--model",
        str(model_dir),
        "--report",
        str(tmp_path / "link" / "rep"),
        address=cluster,
    )
    clean_failure(r, "--report", "inside --input")
    assert digest(tmp_path / "in") == before


# ----------------------------------------------------------------------------- 3. --num-workers 0


def test_3_num_workers_zero_is_not_offered(tmp_path):
    r = run_cli(
        "train",
        "--data",
        str(tmp_path),
        "--model",
        "unet",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        "--num-workers",
        "0",
    )
    assert r.returncode == 2 and "--num-workers" in r.stderr and "at least 1" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- 4. empty val, NaN


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_4_empty_val_split_gives_no_metrics_never_nan(cluster, tmp_path):
    from raydenoise.jobs.ingest import IngestConfig, run_ingest

    ingested_pairs(tmp_path, 6, 32, 32, (1.0, 0.0, 0.0))
    r = run_cli(
        "train",
        "--data",
        str(tmp_path / "ds"),
        "--model",
        "seed-ae",
        "--storage-path",
        str(tmp_path / "runs"),
        "--name",
        "noval",
        "--epochs",
        "2",
        "--patch-size",
        "16",
        address=cluster,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no val split" in r.stdout and "val_psnr -" in r.stdout
    epoch_lines = [line for line in r.stdout.splitlines() if line.startswith("train: epoch ")]
    assert [line.split()[2] for line in epoch_lines] == ["1/2", "2/2"], (
        r.stdout
    )  # each epoch once, in order
    assert (
        "(RayTrainWorker" not in r.stdout and "Reporting training result" not in r.stdout
    )  # Ray's lines: log file
    run = tmp_path / "runs" / "noval"
    config = strict_json((run / "model" / CONFIG).read_text())
    assert config["metrics"]["val_psnr"] is None and config["metrics"]["val_mse"] is None
    assert config["metrics"]["train_loss"] > 0
    strict_json((run / "summary.json").read_text())
    text = (run / "metrics.csv").read_text().lower()
    assert "nan" not in text and "inf" not in text
    for bad in ("nan,0,1", "inf,0,-inf", "0.5,nan,0.5"):
        r = run_cli(
            "ingest",
            "--low",
            str(tmp_path / "low"),
            "--high",
            str(tmp_path / "high"),
            "--out",
            str(tmp_path / "ds2"),
            f"--split={bad}",
        )
        assert r.returncode == 2 and "finite" in r.stderr and "Traceback" not in r.stderr
    from raydenoise.jobs.ingest import IngestError

    with pytest.raises(IngestError, match="finite"):  # the Python API checks too
        run_ingest(
            IngestConfig(
                low=str(tmp_path / "low"),
                high=str(tmp_path / "high"),
                out=str(tmp_path / "ds2"),
                split=(float("nan"), 0.0, 1.0),
            ),
            log=lambda m: None,
        )
    assert not (tmp_path / "ds2" / "manifest.json").exists()


# ----------------------------------------------------------------------------- 5. NaN weights


def test_5_diverged_weights_are_refused_before_any_work(cluster, tmp_path):
    model = build_model("seed-ae", 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["net.0.weight"][0, 0, 0, 0] = float("nan")
    (tmp_path / "m").mkdir()
    save_file(state, str(tmp_path / "m" / WEIGHTS))
    (tmp_path / "m" / CONFIG).write_text(json.dumps({"model": "seed-ae", "width": 8}))
    noisy_images(tmp_path / "in", 2)
    r = denoise(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "m"),
        address=cluster,
    )
    clean_failure(r, "NaN or Inf", "diverged")
    assert not (tmp_path / "out").exists() or not any(
        p.suffix == ".png" for p in (tmp_path / "out").rglob("*")
    )


def test_5_a_model_that_overflows_on_an_image_gives_error_rows_not_black_images():
    from raydenoise.models.inference import Denoiser, NonFiniteOutput

    model = build_model("unet", 8).eval()
    with torch.no_grad():
        # The first layer overflows to +inf; the next, whose weights have both signs, then sums
        # +inf and -inf: NaN whatever order the CPU's convolution kernels add in. (Overflowing
        # only the last layer gave +inf, which the network's own clamp turns into white on
        # CPUs whose kernels never subtract one infinity from another.)
        model.head.weight.fill_(3e38)
    d = Denoiser(model, "unet")
    with pytest.raises(NonFiniteOutput, match="NaN/Inf"):
        d(np.full((16, 16, 3), 200, np.uint8))


# ----------------------------------------------------------------------------- 6. alpha, 16 bit


@pytest.mark.parametrize("pipeline", ["fused", "staged"])  # staged: the GPU layout, run on CPU here
def test_6_alpha_is_carried_through_and_16_bit_stays_16_bit(cluster, model_dir, tmp_path, pipeline):
    """Alpha is carried through; 16-bit PNG and TIFF (what RAW converters export) are denoised at
    full precision and written with 16 bits; a float image is an error row naming why."""
    import tifffile

    color = rgb(32, 48, seed=1)
    alpha = np.zeros((32, 48), np.uint8)
    alpha[:, 24:] = 255  # the left half transparent
    alpha[:4] = 77
    write(tmp_path / "in" / "rgba.png", png_bytes(np.dstack([color, alpha])))
    write(
        tmp_path / "in" / "la.png",
        png_bytes(
            np.dstack([color[..., 0], alpha]),
        ),
    )
    pal = Image.fromarray(color).quantize(16)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    write(tmp_path / "in" / "palette.png", buf.getvalue())
    deep = color.astype(np.uint16) * 257 + np.random.default_rng(0).integers(
        0, 257, color.shape
    ).astype(np.uint16)
    write(tmp_path / "in" / "deep.png", png16_bytes(deep))
    write(tmp_path / "in" / "deepgray.png", png16_bytes(deep[..., 0]))
    buf = io.BytesIO()
    tifffile.imwrite(buf, deep, photometric="rgb")
    write(tmp_path / "in" / "deep.tif", buf.getvalue())
    buf = io.BytesIO()
    tifffile.imwrite(buf, deep.astype(np.float32) / 65535, photometric="rgb")
    write(tmp_path / "in" / "float.tif", buf.getvalue())
    r = denoise(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        "--pipeline",
        pipeline,
        address=cluster,
    )
    clean_failure(r, "1 of 7 images failed", "float.tif")
    rows = report(tmp_path / "out" / "_report")
    assert rows["float.tif"]["status"] == "error" and "32-bit" in rows["float.tif"]["error"]
    from raydenoise.imaging.images import decode_for_denoise

    out16 = decode_for_denoise((tmp_path / "out" / "deep.png").read_bytes()).rgb
    assert (tmp_path / "out" / "deep.png").read_bytes()[24] == 16 and out16.dtype == np.uint16
    assert (
        len(np.unique(out16 % 257)) > 50
    )  # the low byte carries information, not a copy of the high one
    out8 = decode_for_denoise(
        (tmp_path / "out" / "rgba.png").read_bytes()
    ).rgb  # same pixels at 8 bits
    assert np.abs(out16.astype(float) / 257 - out8).mean() < 3
    tif = tifffile.imread(tmp_path / "out" / "deep.tif")
    assert tif.dtype == np.uint16 and np.array_equal(tif, out16)
    gray = decode_for_denoise((tmp_path / "out" / "deepgray.png").read_bytes())
    assert gray.gray and gray.rgb.dtype == np.uint16
    assert rows["deep.png"]["input_noise"] is not None
    out = Image.open(tmp_path / "out" / "rgba.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)
    out = Image.open(tmp_path / "out" / "la.png")
    assert out.mode == "LA" and np.array_equal(np.asarray(out)[..., 1], alpha)
    out = Image.open(tmp_path / "out" / "palette.png").convert("RGBA")
    expected = np.asarray(pal.convert("RGBA"))[..., 3]
    assert np.array_equal(np.asarray(out)[..., 3], expected) and expected.min() == 0


# ----------------------------------------------------------------------------- 7. dot files


def test_7_dot_files_are_listed_as_excluded_or_processed_on_request(cluster, model_dir, tmp_path):
    for key in ("a.png", ".hidden.png", "..png", "sub/..x.png", ".cache/b.png"):
        write(tmp_path / "in" / key, png_bytes(rgb(24, 32)))
    args = [
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
    ]
    r = denoise(*args, address=cluster)
    assert r.returncode == 0, r.stderr
    assert "4 files excluded" in r.stdout
    rows = report(tmp_path / "out" / "_report")
    assert set(rows) == {"a.png", ".hidden.png", "..png", "sub/..x.png", ".cache/b.png"}
    for key in (".hidden.png", "..png", "sub/..x.png", ".cache/b.png"):
        assert rows[key]["status"] == "excluded" and "--include-hidden" in rows[key]["note"]
    assert json.loads((tmp_path / "out" / "_report" / "summary.json").read_text())["excluded"] == 4
    r = denoise(*args, "--include-hidden", address=cluster)
    assert r.returncode == 0, r.stderr
    for key in (".hidden.png", "..png", "sub/..x.png", ".cache/b.png"):
        assert decode_rgb8((tmp_path / "out" / key).read_bytes()).shape == (24, 32, 3)
    assert report(tmp_path / "out" / "_report")["..png"]["status"] == "ok"
    # ingest: hidden files are rejected with the reason, never dropped silently
    for side in ("low", "high"):
        for key in ("p.png", ".q.png"):
            write(tmp_path / side / key, png_bytes(rgb(16, 16)))
    r = run_cli(
        "ingest",
        "--low",
        str(tmp_path / "low"),
        "--high",
        str(tmp_path / "high"),
        "--out",
        str(tmp_path / "ds"),
        "--split",
        "1,0,0",
        address=cluster,
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["total"] == 1
    assert sorted(
        x["file"].rsplit("/", 2)[-2:][0] for x in manifest["rejected"] if "hidden" in x["reason"]
    ) == ["high", "low"]


# ----------------------------------------------------------------------------- 8. reports as input


def test_8_report_folders_are_never_read_as_input(cluster, model_dir, tmp_path):
    noisy_images(tmp_path / "in", 3)
    r = denoise(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        address=cluster,
    )
    assert r.returncode == 0
    # denoise the previous run's output folder, default _report/ inside it
    r = denoise(
        "--input",
        str(tmp_path / "out"),
        "--output",
        str(tmp_path / "out2"),
        "--model",
        str(model_dir),
        address=cluster,
    )
    assert r.returncode == 0, r.stderr
    rows = report(tmp_path / "out2" / "_report")
    assert sum(row["status"] == "ok" for row in rows.values()) == 3
    assert {k for k, row in rows.items() if row["status"] == "excluded"} == {
        f"_report/{n}" for n in ("report.parquet", "report.csv", "summary.json", "report.html")
    }
    assert all("earlier denoise run" in rows[k]["note"] for k in rows if k.startswith("_report/"))


# ----------------------------------------------------------------------------- 9. one bad object


@pytest.mark.parametrize("pipeline", ["fused", "staged"])
def test_9_symlinks_to_folders_and_loops_are_error_rows_and_the_job_goes_on(
    cluster, model_dir, tmp_path, pipeline
):
    noisy_images(tmp_path / "in", 3)
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "dirlink.png").symlink_to(tmp_path / "in" / "sub")
    (tmp_path / "in" / "loop1.png").symlink_to(tmp_path / "in" / "loop2.png")
    (tmp_path / "in" / "loop2.png").symlink_to(tmp_path / "in" / "loop1.png")
    (tmp_path / "in" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    r = denoise(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        "--pipeline",
        pipeline,
        address=cluster,
    )
    clean_failure(r, "4 of 7 images failed", "dirlink.png", "loop1.png")
    rows = report(tmp_path / "out" / "_report")
    assert "folder" in rows["dirlink.png"]["error"] and "loop" in rows["loop1.png"]["error"]
    assert "not found" in rows["dangling.png"]["error"]
    assert sum(row["status"] == "ok" for row in rows.values()) == 3


def test_9_storage_that_fails_writes_stops_the_image_not_silently():
    """The storage wrapper variant of a full disk: a write that fails with ENOSPC marks the job
    to stop (not an error row); a per-object failure is that image's error."""
    import errno

    from raydenoise.jobs.denoise.image import finish_one
    from raydenoise.jobs.denoise.state import _new_state, _Stores
    from raydenoise.ledger.report import NOT_DONE
    from raydenoise.storage.store import open_store

    class FullDisk:
        def __init__(self, store, err):
            self.store, self.err = store, err

        def write_bytes(self, key, data):
            raise OSError(self.err, os.strerror(self.err))

        def uri(self, key):
            return self.store.uri(key)

    st = _Stores.__new__(_Stores)
    st.ref, st.quality, st.stamp, st.fmt = None, None, {}, "keep"
    for err, status in ((errno.ENOSPC, NOT_DONE), (errno.EACCES, "error")):
        st.out = FullDisk(open_store("/tmp/x"), err)
        state = replace(_new_state("a.png", False), image=rgb(8, 8), output=rgb(8, 8), format="PNG")
        row = finish_one(state, st)
        assert row["status"] == status
        assert os.strerror(err).lower() in (row["note"] or row["error"]).lower()


def _can_mount_tmpfs() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                capture_output=True,
                timeout=20,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not _can_mount_tmpfs(),
    reason="user namespaces cannot mount a tmpfs here; "
    "test_9_storage_that_fails_writes_stops_the_image_not_silently covers the logic",
)
def test_9_full_disk_stops_with_one_line_writes_the_report_and_a_rerun_resumes(model_dir, tmp_path):
    """A 20 KiB tmpfs (5 pages) holds a few of the outputs; the job stops at the first ENOSPC with one line,
    the report (on another disk) lists what was done and what was not; after the tmpfs grows,
    the same command completes the job. Runs a fresh local Ray inside the mount namespace."""
    inputs = noisy_images(tmp_path / "in", 12, 64, 96)
    (tmp_path / "out").mkdir()
    exe = Path(sys.executable).parent / "raydenoise"
    cmd = (
        f"{exe} denoise --input {tmp_path / 'in'} --output {tmp_path / 'out'} --model {model_dir} "
        f"--report {tmp_path / 'rep'} --workers 1"
    )
    script = "\n".join(
        [
            f"mount -t tmpfs -o size=20k tmpfs {tmp_path / 'out'}",
            f"{cmd} > {tmp_path / 'run1.out'} 2> {tmp_path / 'run1.err'}; echo $? > {tmp_path / 'run1.rc'}",
            f"cp -r {tmp_path / 'rep'} {tmp_path / 'rep1'}",
            f"ls -a {tmp_path / 'out'} > {tmp_path / 'run1.ls'}",
            f"for f in {tmp_path / 'out'}/*.png; do cp $f {tmp_path / 'rep1'}/written-$(basename $f); done",
            f"mount -o remount,size=8m {tmp_path / 'out'}",
            f"{cmd} > {tmp_path / 'run2.out'} 2> {tmp_path / 'run2.err'}; echo $? > {tmp_path / 'run2.rc'}",
            f"mkdir {tmp_path / 'final'} && cp {tmp_path / 'out'}/*.png {tmp_path / 'final'}/",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=400, env=env, check=True)
    rc1, err1 = int((tmp_path / "run1.rc").read_text()), (tmp_path / "run1.err").read_text()
    assert rc1 == 1 and "Traceback" not in err1
    assert "No space left on device" in err1 and "rerun the same command to resume" in err1
    rows = report(tmp_path / "rep1")
    assert set(rows) == set(inputs)  # every input accounted for
    done = {k for k, r in rows.items() if r["status"] == "ok"}
    assert 0 < len(done) < len(inputs)
    assert all(r["status"] == "not-done" for k, r in rows.items() if k not in done)
    assert ".raydenoise-tmp-" not in (tmp_path / "run1.ls").read_text()
    for k in done:  # what the first run reported as written is complete
        decode_rgb8((tmp_path / "rep1" / f"written-{k}").read_bytes())
    assert int((tmp_path / "run2.rc").read_text()) == 0, (tmp_path / "run2.err").read_text()[-2000:]
    rows = report(tmp_path / "rep")
    skipped = {k for k, r in rows.items() if r["status"] == "skipped"}
    # Everything the first run reported as written is kept. An image whose output an actor
    # completed after the driver had stopped collecting was reported not-done; the rerun finds
    # its output complete (verified by decoding) and keeps it too.
    assert done <= skipped
    assert {k for k, r in rows.items() if r["status"] == "ok"} == set(inputs) - skipped
    for k in inputs:
        assert decode_rgb8((tmp_path / "final" / k).read_bytes()).shape == (64, 96, 3)


def test_9_s3_server_stopping_mid_run_stops_the_job_and_a_rerun_resumes(
    cluster, model_dir, tmp_path
):
    """Outputs go to a second SeaweedFS that is stopped once a few outputs exist, then started
    again on the same data for the rerun."""
    proc, server, ports = start_weed(tmp_path / "weed")
    try:
        inputs = noisy_images(tmp_path / "in", 24, 96, 128)
        out = f"s3://{BUCKET}/faults/out"
        exe = Path(sys.executable).parent / "raydenoise"
        cmd = [
            str(exe),
            "denoise",
            "--input",
            str(tmp_path / "in"),
            "--output",
            out,
            "--model",
            str(model_dir),
            "--report",
            str(tmp_path / "rep"),
            "--s3-endpoint",
            server.endpoint,
            "--batch-size",
            "1",
            "--address",
            cluster,
        ]
        # One attempt per S3 call (botocore's standard setting; its default is several, with
        # backoff): the job meets the stopped server at once instead of ~25 s later.
        once = {**os.environ, "AWS_MAX_ATTEMPTS": "1"}
        run = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=once
        )
        fs = server.fs()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                fs.invalidate_cache()
                if len(fs.find(f"{BUCKET}/faults/out")) >= 3:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        stop_weed(proc)
        _stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert "stopped:" in stderr and "rerun the same command to resume" in stderr
        assert "aws_secret" not in stderr.lower() and "raydenoise-test-secret" not in stderr
        rows = report(tmp_path / "rep")
        assert set(rows) == set(inputs)
        done = {k for k, r in rows.items() if r["status"] == "ok"}
        assert len(done) < len(inputs) and all(
            r["status"] in ("ok", "not-done") for r in rows.values()
        )
        proc, server, _ = start_weed(tmp_path / "weed", ports)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = report(tmp_path / "rep")
        assert {k for k, r in rows.items() if r["status"] == "skipped"} >= done
        assert all(r["status"] in ("ok", "skipped") for r in rows.values())
        import s3fs

        fresh = s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True)
        for k in inputs:
            assert decode_rgb8(fresh.cat_file(f"{BUCKET}/faults/out/{k}")).shape == (96, 128, 3)
    finally:
        stop_weed(proc)


# ----------------------------------------------------------------------------- 10. tracebacks


def test_10_damaged_models_and_bad_numbers_are_one_line_errors(cluster, model_dir, tmp_path):
    noisy_images(tmp_path / "in", 1)
    cases = {
        "empty weights": (b"", None, "not a readable safetensors file"),
        "damaged weights": (
            b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage",
            None,
            "not a readable safetensors file",
        ),
        "width text": (None, {"model": "seed-ae", "width": "abc"}, "\"width\" is 'abc'"),
        "width negative": (None, {"model": "seed-ae", "width": -3}, '"width" is -3'),
        "a list": (None, [1, 2], "expected a JSON object"),
        "other width": (None, {"model": "seed-ae", "width": 16}, "does not fit the network"),
    }
    for name, (weights, config, needle) in cases.items():
        m = tmp_path / name.replace(" ", "-")
        shutil.copytree(model_dir, m)
        if weights is not None:
            (m / WEIGHTS).write_bytes(weights)
        if config is not None:
            (m / CONFIG).write_text(json.dumps(config))
        r = denoise(
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(m),
            address=cluster,
        )
        clean_failure(r, needle)
    for tile in ("1", "3", "31"):
        r = denoise(
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
            "--tile",
            tile,
        )
        assert r.returncode == 2 and "at least 32" in r.stderr and "Traceback" not in r.stderr
    for flag, value in (("--num-gpus-per-worker", "nan"), ("--max-megapixels", "-1")):
        r = denoise("--input", "i", "--output", "o", "--model", "m", flag, value)
        assert r.returncode == 2 and "Traceback" not in r.stderr


def test_10_evaluate_on_a_damaged_or_vanished_shard_names_it(cluster, model_dir, tmp_path):
    ingested_pairs(tmp_path, 6, 24, 32, (0.0, 0.0, 1.0), rows_per_shard=2)
    shards = sorted((tmp_path / "ds" / "test").glob("*.parquet"))
    assert len(shards) == 3
    shards[0].write_bytes(shards[0].read_bytes()[:100])  # damaged
    shards[1].unlink()  # re-ingested away while evaluating
    r = run_cli(
        "evaluate", "--data", str(tmp_path / "ds"), "--model", str(model_dir), address=cluster
    )
    clean_failure(r, shards[0].name, "the table covers 2 of 6 pairs")
    assert "re-ingested" in r.stderr and shards[1].name in r.stderr
    table = strict_json((model_dir / "eval" / "test" / "table.json").read_text())
    assert (
        table["table"]["model"]["images"] == 2
        and len(table["errors"]) == 2 == table["errors_total"]
    )


def test_10_resuming_a_run_with_another_model_names_both(cluster, tmp_path):
    from raydenoise.jobs.train import TrainError, resolve_config, run_train

    ingested_pairs(tmp_path, 4, 32, 32, (0.75, 0.25, 0.0))
    common = dict(
        data=str(tmp_path / "ds"),
        storage_path=str(tmp_path / "runs"),
        name="r",
        epochs=1,
        patch_size=16,
    )
    run_train(resolve_config("seed-ae", width=8, **common), log=lambda m: None)
    with pytest.raises(
        TrainError,
        match=r"trained as --model seed-ae --width 8; this command asks for --model unet",
    ):
        run_train(resolve_config("unet", width=8, **common), log=lambda m: None)


# ----------------------------------------------------------------------------- 11. large images


def test_11_large_images_are_tiled_automatically_and_the_pixel_limit_is_a_flag(
    cluster, model_dir, tmp_path
):
    from raydenoise.models.inference import Denoiser

    model = build_model("unet", 8).eval()
    d = Denoiser(model, "unet", width=8, memory_budget=8 * 1024 * 1024)  # 8 MiB: ~0.04 MP untiled
    assert d.tile_for(100, 100) is None and d.tile_for(400, 600) is not None
    image = rgb(300, 420, seed=3)
    whole = Denoiser(model, "unet", width=8, memory_budget=1 << 34)(image)
    assert np.abs(d(image).astype(int) - whole.astype(int)).max() <= 1
    write(tmp_path / "in" / "big.png", png_bytes(rgb(60, 80)))
    args = [
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
    ]
    r = denoise(*args, "--max-megapixels", "0.004", address=cluster)
    clean_failure(r, "too many pixels", "--max-megapixels")
    assert denoise(*args, "--max-megapixels", "0.005", address=cluster).returncode == 0


def test_11_large_image_gate_bounds_concurrent_holders(tmp_path):
    import threading

    from raydenoise.models.inference import LargeImageGate

    gate = LargeImageGate(folder=str(tmp_path / "locks"), poll_s=0.01)
    big = int(gate.fraction * gate.total // 2)  # two fit at once
    assert gate.slots_for(big) == 2
    meter = PeakConcurrency()

    def hold():
        with gate.hold(big), meter.inside():
            time.sleep(0.2)

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.peak == 2
    with gate.hold(1024) as waited:  # small images never wait
        assert waited == 0.0


def test_1_resume_check_unit(tmp_path):
    """read_one on an image whose output exists: a complete output of the input's size is trusted
    without decoding the input (its header gives the size; no reference); a truncated one, or one
    of another size (with or without a reference), is redone."""
    from raydenoise.jobs.denoise.image import read_one
    from raydenoise.jobs.denoise.state import _Stores

    image = rgb(20, 30)
    write(tmp_path / "in" / "a.png", png_bytes(image))
    write(tmp_path / "out" / "a.png", png_bytes(image))
    write(tmp_path / "ref" / "a.png", png_bytes(image))
    st = _Stores(str(tmp_path / "in"), str(tmp_path / "out"), None, None, None)
    state = read_one("a.png", True, st)
    assert state.skip and not state.error and (state.height, state.width) == (20, 30)
    assert state.image.shape == (
        1,
        1,
        3,
    )  # trusted from the input's header: the input was not decoded
    write(
        tmp_path / "out" / "a.png", png_bytes(rgb(10, 10))
    )  # a valid image of another size, no reference
    state = read_one("a.png", True, st)
    assert not state.skip and "existing output is 10x10, the input 30x20" in state.note
    write(tmp_path / "out" / "a.png", png_bytes(image)[:-30])
    state = read_one("a.png", True, st)
    assert (
        not state.skip
        and "incomplete or damaged" in state.note
        and state.image.shape == (20, 30, 3)
    )
    write(tmp_path / "out" / "a.png", png_bytes(rgb(10, 30)))
    st = _Stores(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "ref"), None, None)
    state = read_one("a.png", True, st)
    assert not state.skip and "existing output is 30x10, the input 30x20" in state.note


# ----------------------------------------------------------------------------- 12. a killed driver


def _denoise_until_parts(
    tmp_path: Path, model_dir: Path, cluster: str, parts: int
) -> subprocess.Popen:
    """`raydenoise denoise` IN -> OUT as a CLI process (one actor, a report part every 0.2 s),
    returned once it has written ``parts`` report parts (or ended, or 120 s passed)."""
    rep = tmp_path / "out" / "_report"
    exe = Path(sys.executable).parent / "raydenoise"
    cmd = [
        str(exe),
        "denoise",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        "--workers",
        "1",
        "--batch-size",
        "1",
        "--address",
        cluster,
    ]
    run = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAYDENOISE_REPORT_PART_SECONDS": "0.2"},
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and len(list(rep.glob(".runs/*/part-*.parquet"))) < parts
        and run.poll() is None
    ):
        time.sleep(0.02)
    return run


def test_12_a_killed_driver_leaves_report_parts_and_the_rerun_reports_every_input_once(
    cluster, model_dir, tmp_path
):
    """The driver (the CLI) is SIGKILLed half-way: the report parts it wrote list what was done;
    the rerun trusts those outputs without reading them (an output rewritten with the same size
    and modification time stays as it is: it was not read), redoes one whose size changed, does
    the rest, and reports every input exactly once."""
    import signal

    inputs = noisy_images(tmp_path / "in", 240, 48, 64)
    rep = tmp_path / "out" / "_report"
    run = _denoise_until_parts(tmp_path, model_dir, cluster, parts=3)
    run.kill()
    assert run.wait() == -signal.SIGKILL, run.stderr.read()[-2000:]
    part_files = sorted(rep.glob(".runs/*/part-*.parquet"))
    assert len(part_files) >= 3 and not (rep / "report.parquet").exists()
    done = {
        r["key"]: r for f in part_files for r in pq.read_table(f).to_pylist() if r["status"] == "ok"
    }
    assert 0 < len(done) < len(inputs)
    first, second = sorted(done)[:2]
    same = (
        tmp_path / "out" / first
    )  # rewritten in place, same size and modification time: trusted, not read
    st = same.stat()
    same.write_bytes(b"\0" * st.st_size)
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    (tmp_path / "out" / second).write_bytes(
        (tmp_path / "out" / second).read_bytes()[:-10]
    )  # changed: redone
    summary = run_denoise(
        DenoiseConfig(
            input=str(tmp_path / "in"),
            output=str(tmp_path / "out"),
            model=str(model_dir),
            workers=2,
        ),
        log=lambda m: None,
    )
    rows = pq.read_table(rep / "report.parquet").to_pylist()
    assert [r["key"] for r in rows] == sorted(inputs)  # every input exactly once
    by_key = {r["key"]: r for r in rows}
    assert summary["trusted"] == len(done) - 1 and summary["count"] == len(inputs)
    assert by_key[first]["status"] == "skipped" and same.read_bytes() == b"\0" * st.st_size
    assert by_key[second]["status"] == "ok" and "redone" in by_key[second]["note"]
    assert all(r["status"] in ("ok", "skipped") for r in rows)
    for k in inputs:
        if k != first:
            assert decode_rgb8((tmp_path / "out" / k).read_bytes()).shape == (48, 64, 3)
            assert by_key[k]["output_bytes"] == (tmp_path / "out" / k).stat().st_size
    assert not (rep / ".runs").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if ".raydenoise-tmp-" in p.name]


def test_12b_sigterm_stops_like_ctrl_c_with_a_report_of_what_was_done(cluster, model_dir, tmp_path):
    """SIGTERM (timeout, a scheduler, Kubernetes) half-way: rc 143, a line saying so, and the report
    lists every input, done or not-done."""
    import signal

    inputs = noisy_images(tmp_path / "in", 60, 48, 64)
    rep = tmp_path / "out" / "_report"
    run = _denoise_until_parts(tmp_path, model_dir, cluster, parts=1)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) == 143
    err = run.stderr.read()
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    rows = pq.read_table(rep / "report.parquet").to_pylist()
    assert [r["key"] for r in rows] == sorted(inputs)
    assert {r["status"] for r in rows} <= {"ok", "not-done"} and any(
        r["status"] == "ok" for r in rows
    )


def test_1b_an_output_rewritten_in_place_with_the_same_size_is_redone(cluster, model_dir, tmp_path):
    """Bytes zeroed inside a JPEG output (same size, new modification time) still decode, but its
    MD5 is not the one the report recorded: the rerun redoes it and says why."""
    from conftest import jpeg_bytes

    for i in range(3):
        write(tmp_path / "in" / f"{i}.jpg", jpeg_bytes(rgb(48, 64, seed=i)))
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir), workers=1
    )
    assert run_denoise(cfg, log=lambda m: None)["ok"] == 3
    damaged = tmp_path / "out" / "1.jpg"
    data = bytearray(damaged.read_bytes())
    assert data[6:11] == b"JFIF\0"
    data[13:18] = bytes(5)  # the JFIF header's density fields: any decoder still reads the image
    time.sleep(0.01)
    damaged.write_bytes(bytes(data))  # same size, new mtime, still a decodable JPEG
    decode_rgb8(damaged.read_bytes())
    again = run_denoise(cfg, log=lambda m: None)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out/_report/report.parquet").to_pylist()}
    assert (
        again["trusted"] == 2
        and rows["1.jpg"]["status"] == "ok"
        and "changed since raydenoise wrote it" in rows["1.jpg"]["note"]
    )
    assert damaged.read_bytes() != bytes(data)


# ----------------------------------------------------------------------------- hostile folders (trust issue)


def test_a_link_inside_the_output_that_leads_into_the_input_is_an_error_row_never_followed(
    cluster, model_dir, tmp_path
):
    """``ln -s IN/sub OUT/sub``: the write of OUT/sub/x.png would land on the input IN/sub/x.png.
    It is an error row naming the link; the input is untouched; the other images are written."""
    noisy_images(tmp_path / "in", 2)
    noisy_images(tmp_path / "in" / "sub", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "in" / "sub")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "img01.png").symlink_to(
        tmp_path / "elsewhere" / "x.png"
    )  # a link as the file itself
    before = digest(tmp_path / "in")
    summary = run_denoise(
        DenoiseConfig(
            input=str(tmp_path / "in"),
            output=str(tmp_path / "out"),
            model=str(model_dir),
            workers=1,
        ),
        log=lambda m: None,
    )
    assert digest(tmp_path / "in") == before and not list((tmp_path / "elsewhere").iterdir())
    rows = report(tmp_path / "out" / "_report")
    for key in ("sub/img00.png", "sub/img01.png"):
        assert (
            rows[key]["status"] == "error" and "/out/sub is a symbolic link" in rows[key]["error"]
        )
        assert "leads outside" in rows[key]["error"]
    assert (
        rows["img01.png"]["status"] == "error"
        and "img01.png is a symbolic link" in rows["img01.png"]["error"]
    )
    assert rows["img00.png"]["status"] == "ok" and summary["failures"] == 3


def test_a_resume_keeps_only_outputs_this_run_would_make(cluster, model_dir, tmp_path):
    """A completion row records what made each output (the input's size and tag, the model's
    fingerprint and options): another model on the same output, a folder retrained in place, an
    input replaced by another photo or outputs no report vouches for are redone, not kept;
    ``--other-model refuse`` stops before any work, naming both models."""
    import shutil as sh

    inputs = noisy_images(tmp_path / "in", 3)
    other = tmp_path / "other"
    torch.manual_seed(1)
    save_model_dir(other, build_model("seed-ae", 8).eval(), {"model": "seed-ae", "width": 8})
    base = dict(input=str(tmp_path / "in"), output=str(tmp_path / "out"), workers=1)

    def run(model, **kw):
        s = run_denoise(DenoiseConfig(**base, model=str(model), **kw), log=lambda m: None)
        return s, report(tmp_path / "out" / "_report")

    first, rows = run(model_dir)
    made = {k: (tmp_path / "out" / k).read_bytes() for k in inputs}
    assert first["ok"] == 3 and {r["model"] for r in rows.values()} == {str(model_dir)}
    assert all(r["input_bytes"] == len(inputs[k]) and r["made_by"] for k, r in rows.items())
    same, _ = run(model_dir)
    assert same["trusted"] == 3 and same["ok"] == 0
    # --other-model refuse: one line naming both, nothing written
    with pytest.raises(
        DenoiseError, match=f"made by another model.*{model_dir}.*this run uses {other}"
    ):
        run(other, other_model="refuse")
    assert {k: (tmp_path / "out" / k).read_bytes() for k in inputs} == made
    # another model: every output redone, the report credits it
    second, rows = run(other)
    assert second["ok"] == 3 and second["skipped"] == 0
    assert all("another model" in r["note"] and r["model"] == str(other) for r in rows.values())
    assert all((tmp_path / "out" / k).read_bytes() != made[k] for k in inputs)
    # the same folder retrained in place: a new fingerprint
    sh.rmtree(other)
    torch.manual_seed(2)
    save_model_dir(other, build_model("seed-ae", 8).eval(), {"model": "seed-ae", "width": 8})
    assert run(other)[0]["ok"] == 3
    # other options (strength) make other pixels: redone
    assert run(other, strength=0.5)[0]["ok"] == 3
    # an input replaced by another photo (same name): redone; the others are kept
    write(tmp_path / "in" / "img01.png", png_bytes(rgb(40, 56, seed=99)))
    again, rows = run(other, strength=0.5)
    assert (again["ok"], again["trusted"]) == (1, 2) and "input changed" in rows["img01.png"][
        "note"
    ]
    # outputs that no report vouches for (the report folder removed): redone
    sh.rmtree(tmp_path / "out" / "_report")
    unknown, rows = run(other, strength=0.5)
    assert unknown["ok"] == 3 and all("no earlier report" in r["note"] for r in rows.values())
    # another engine (bfloat16 where the CPU has the units for it) makes other pixels: redone
    from raydenoise.models.engines import fast_bf16_cpu

    engine = "torch-bf16" if fast_bf16_cpu() else "torch"
    other_engine, rows = run(other, strength=0.5, engine=engine)
    assert other_engine["ok"] == 3 and other_engine["engine"] == engine
    assert run(other, strength=0.5, engine=engine)[0]["trusted"] == 3


def test_two_runs_into_one_output_the_second_is_refused_and_the_first_completes(
    cluster, model_dir, tmp_path
):
    """The second run stops before planning, naming the first; the first finishes with every
    input in its report, removes its lock and its run folder, and leaves a later run's folder."""
    inputs = noisy_images(tmp_path / "in", 60, 48, 64)
    run = _denoise_until_parts(tmp_path, model_dir, cluster, parts=1)
    assert run.poll() is None, run.stderr.read()[-2000:]
    later = tmp_path / "out" / "_report" / ".runs" / "29991231T000000Z-ffffff"
    later.mkdir(parents=True)
    with pytest.raises(
        DenoiseError,
        match=r"out is being written by another raydenoise run \(run \d{8}T\d{6}Z-\w+, "
        rf"pid {run.pid} on ",
    ):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir)
            ),
            log=lambda m: None,
        )
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
    rows = report(tmp_path / "out" / "_report")
    assert set(rows) == set(inputs) and {r["status"] for r in rows.values()} == {"ok"}
    assert not (tmp_path / "out" / "_report" / ".lock").exists()
    assert [p.name for p in (tmp_path / "out" / "_report" / ".runs").iterdir()] == [later.name]


def test_a_run_that_fails_before_any_work_leaves_no_empty_folders(cluster, tmp_path):
    noisy_images(tmp_path / "in", 1)
    with pytest.raises(DenoiseError, match="missing config.json"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"),
                output=str(tmp_path / "out"),
                model=str(tmp_path / "no-model"),
            ),
            log=lambda m: None,
        )
    assert not (tmp_path / "out").exists()


def test_file_names_that_are_not_utf8_are_processed_and_kept_byte_for_byte(
    cluster, model_dir, tmp_path
):
    """``caf\\xe9.png`` (Latin-1, as old zips leave it) and a name with a backslash, beside plain
    ones: denoise, a dry run, ingest and synth process them, the outputs keep the names' bytes,
    and reports show them escaped (``caf\\\\xe9.png``)."""
    from raydenoise.jobs.ingest import IngestConfig, run_ingest
    from raydenoise.jobs.synth import SynthConfig, run_synth

    src = os.fsencode(tmp_path / "in")
    os.makedirs(src)
    names = [b"caf\xe9.png", b"back\\slash.png", b"plain.png", b"d\xff\xfe/x.png"]
    for i, n in enumerate(names):
        os.makedirs(os.path.dirname(os.path.join(src, n)), exist_ok=True)
        with open(os.path.join(src, n), "wb") as f:
            f.write(png_bytes(rgb(24, 32, seed=i)))
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir), workers=1
    )
    dry = run_denoise(DenoiseConfig(**{**cfg.__dict__, "dry_run": True}), log=lambda m: None)
    assert dry["to_do"] == 4
    summary = run_denoise(cfg, log=lambda m: None)
    assert summary["ok"] == 4 and summary["failures"] == 0
    out = os.fsencode(tmp_path / "out")
    for n in names:
        decode_rgb8(open(os.path.join(out, n), "rb").read())
    keys = set(report(tmp_path / "out" / "_report"))
    assert keys == {"caf\\xe9.png", "back\\\\slash.png", "plain.png", "d\\xff\\xfe/x.png"}
    again = run_denoise(cfg, log=lambda m: None)
    assert (
        again["trusted"] == 4 and again["ok"] == 0
    )  # the escaped keys plan and merge like any other
    # synth and ingest (clean-only) take the same names
    res = run_synth(
        SynthConfig(clean=str(tmp_path / "in"), out=str(tmp_path / "pairs"), noise="gaussian:10"),
        log=lambda m: None,
    )
    assert len(res.written) == 4
    assert os.path.exists(os.path.join(os.fsencode(tmp_path / "pairs"), b"high", b"caf\xe9.png"))
    run_ingest(
        IngestConfig(
            low=None, high=str(tmp_path / "in"), out=str(tmp_path / "ds"), split=(0.5, 0.5, 0.0)
        ),
        log=lambda m: None,
    )
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["total"] == 4 and manifest["counts"]["rejected_files"] == 0


def test_outputs_keep_exif_icc_and_stay_lossy_at_the_inputs_quality(cluster, model_dir, tmp_path):
    """A phone JPEG (quality 80, 4:2:0, EXIF with orientation 6 and a camera name, an ICC
    profile) comes back as a JPEG of about its size at quality 80, 4:2:0, upright pixels with
    orientation 1, the camera name and the same profile; a lossy WebP stays lossy;
    --quality overrides and is part of what made the output (a rerun with another redoes it)."""
    from PIL import ImageCms, JpegImagePlugin

    from raydenoise.imaging.metadata import jpeg_quality

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = 6, "PhoneMaker", "Phone 9"
    photo = (np.clip(rgb(48, 64, seed=3).astype(float) * 0.5 + 60, 0, 255)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(
        buf, "JPEG", quality=80, subsampling=2, exif=exif.tobytes(), icc_profile=icc
    )
    write(tmp_path / "in" / "phone.jpg", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "WEBP", quality=70)
    write(tmp_path / "in" / "lossy.webp", buf.getvalue())
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir), workers=1
    )
    assert run_denoise(cfg, log=lambda m: None)["ok"] == 2
    out = Image.open(tmp_path / "out" / "phone.jpg")
    assert out.size == (48, 64)  # rotated upright: EXIF orientation 6 applied to the pixels
    assert jpeg_quality(out) == 80 and JpegImagePlugin.get_sampling(out) == 2
    assert (
        out.getexif()[0x0112] == 1
        and out.getexif()[0x010F] == "PhoneMaker"
        and out.info["icc_profile"] == icc
    )
    size_in = (tmp_path / "in" / "phone.jpg").stat().st_size
    assert (tmp_path / "out" / "phone.jpg").stat().st_size < 1.3 * size_in
    assert (tmp_path / "out" / "lossy.webp").read_bytes()[12:16] in (b"VP8 ", b"VP8X")
    assert b"VP8L" not in (tmp_path / "out" / "lossy.webp").read_bytes()[:64]
    again = run_denoise(DenoiseConfig(**{**cfg.__dict__, "quality": 50}), log=lambda m: None)
    assert again["ok"] == 2 and jpeg_quality(Image.open(tmp_path / "out" / "phone.jpg")) == 50


def test_format_renames_outputs_refuses_shared_names_and_is_part_of_what_made_them(
    cluster, model_dir, tmp_path
):
    """--format jpeg: every output becomes NAME.jpg (a .jpeg input keeps its name); img.bmp and
    img.tif would both make img.jpg: the first keeps it, the other is an excluded row naming
    both; transparency and 16 bits that JPEG cannot hold are noted per image; a rerun trusts
    the renamed outputs; --format png then writes PNGs (16 bits kept) and leaves the JPEGs."""
    from raydenoise.imaging.images import decode_for_denoise

    rgba = np.dstack([rgb(40, 48, seed=1), np.full((40, 48), 200, np.uint8)])
    write(tmp_path / "in" / "alpha.png", png_bytes(rgba))
    write(tmp_path / "in" / "deep.png", png16_bytes(rgb(40, 48, seed=2).astype(np.uint16) * 257))
    for name, fmt in (("img.bmp", "BMP"), ("img.tif", "TIFF"), ("sub/x.jpeg", "JPEG")):
        buf = io.BytesIO()
        Image.fromarray(rgb(40, 48, seed=3)).save(buf, fmt)
        write(tmp_path / "in" / name, buf.getvalue())
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"),
        output=str(tmp_path / "out"),
        model=str(model_dir),
        workers=1,
        format="jpeg",
    )
    first = run_denoise(cfg, log=lambda m: None)
    assert first["ok"] == 4 and first["excluded"] == 1
    out = tmp_path / "out"
    assert sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and "_report" not in p.parts
    ) == [
        "alpha.jpg",
        "deep.jpg",
        "img.jpg",
        "sub/x.jpeg",
    ]
    for name in ("alpha.jpg", "deep.jpg", "img.jpg", "sub/x.jpeg"):
        assert Image.open(out / name).format == "JPEG"
    rows = report(out / "_report")
    assert rows["img.tif"]["status"] == "excluded"
    assert "img.jpg" in rows["img.tif"]["note"] and "img.bmp" in rows["img.tif"]["note"]
    assert "alpha channel was dropped" in rows["alpha.png"]["note"]
    assert "16-bit" in rows["deep.png"]["note"]
    again = run_denoise(cfg, log=lambda m: None)
    assert again["ok"] == 0 and again["skipped"] == 4 and again["trusted"] == 4
    as_png = run_denoise(DenoiseConfig(**{**cfg.__dict__, "format": "png"}), log=lambda m: None)
    assert as_png["ok"] == 4 and (out / "img.jpg").exists()
    assert decode_for_denoise((out / "deep.png").read_bytes(), None).rgb.dtype == np.uint16
    assert Image.open(out / "sub/x.png").format == "PNG"
