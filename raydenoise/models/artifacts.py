"""Model and training-state files: safetensors for tensors, JSON for everything else. No pickle,
no Ray here.

A model directory holds ``config.json`` (architecture, hyper-parameters, data reference,
metrics) and ``model.safetensors``; ``load_model`` rebuilds the network from the config alone.
A training checkpoint adds ``optimizer.safetensors`` + ``train_state.json`` (epoch, optimizer
scalars, elapsed time, metric history), and with ``--ema`` ``train_weights.safetensors`` (the
weights being trained; ``model.safetensors`` then holds their moving average).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import RaydenoiseError
from ..storage.errors import object_error
from ..storage.jsonfile import json_safe
from ..storage.store import cached_store

if (
    TYPE_CHECKING
):  # torch is imported where weights are read or written: resolving a name needs none
    import torch
    from torch import nn

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"
RAW_WEIGHTS = "train_weights.safetensors"  # with --ema: the weights being trained (the model file holds the average)


class ArtifactError(RaydenoiseError, ValueError):
    """A model directory that is missing files or does not match its config."""


def unwrap(model: nn.Module) -> nn.Module:
    return cast("nn.Module", getattr(model, "module", model))  # DDP wraps the model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics included) as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


def save_model_dir(directory: str | os.PathLike, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``config.json`` and ``model.safetensors``; config must name ``model`` and ``width``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(model_state(model), str(d / WEIGHTS), metadata={"format": "pt"})
    (d / CONFIG).write_text(
        json.dumps(json_safe(config), indent=2, default=_json_default, allow_nan=False)
    )


MAX_WIDTH = 1024


def check_config(config: Any, where: str) -> dict:
    """A model config.json's content, checked: a JSON object naming a known ``model`` and an
    integer ``width`` (or none, for the default). ArtifactError says what is wrong."""
    from .networks import MODEL_NAMES

    if not isinstance(config, dict):
        raise ArtifactError(
            f"{where}: expected a JSON object, found a JSON {type(config).__name__}"
        )
    name = config.get("model")
    if name not in MODEL_NAMES:
        raise ArtifactError(
            f'{where}: "model" is {name!r}; expected one of {", ".join(MODEL_NAMES)}'
        )
    width = config.get("width")
    if width is not None and (
        isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH
    ):
        raise ArtifactError(
            f'{where}: "width" is {width!r}; expected a whole number from 1 to {MAX_WIDTH}'
        )
    return config


def check_state(state: dict[str, torch.Tensor], model: nn.Module, where: str) -> None:
    """The weights fit the network (same names and shapes) and are finite; ArtifactError names
    the first few tensors that do not."""
    import torch

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    shapes = [
        f"{k} {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]
    ]
    problems = [
        f"{len(v)} {what} (e.g. {', '.join(v[:2])})"
        for what, v in (
            ("missing tensors", missing),
            ("unexpected tensors", extra),
            ("tensors of another shape", shapes),
        )
        if v
    ]
    if problems:
        raise ArtifactError(
            f"{where} does not fit the network its config.json describes: {'; '.join(problems)}"
        )
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ArtifactError(
            f"{where}: {len(bad)} tensors hold NaN or Inf (e.g. {', '.join(bad[:2])}); the training "
            "run that wrote them diverged, so this model would write garbage images"
        )


def load_model(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the network named in ``config.json`` and load ``model.safetensors`` into it (strict).

    Returns (model in eval mode, config). ArtifactError names what is missing, damaged or
    mismatched: config types, weights that do not decode, do not fit the network or are not finite.
    """
    from safetensors.torch import load_file

    from .architectures import build_model

    d = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (d / name).is_file():
            raise ArtifactError(f"{d}: missing {name} (expected a raydenoise model folder)")
    try:
        config = json.loads((d / CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{d / CONFIG} is not valid JSON ({exc})") from None
    check_config(config, str(d / CONFIG))
    model = build_model(config["model"], config.get("width"))
    try:
        state = load_file(str(d / WEIGHTS), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: a damaged, empty or foreign file
        raise ArtifactError(
            f"{d / WEIGHTS} is not a readable safetensors file (damaged or empty?): "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        ) from None
    check_state(state, model, str(d / WEIGHTS))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config


BUILTIN = "builtin:"
BUILTIN_DIR = (
    Path(__file__).resolve().parent / "weights"
)  # package data: weights/NAME/{config.json, model.safetensors}


def builtin_names() -> list[str]:
    """The built-in models shipped in the package, by name."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(
        d.name for d in BUILTIN_DIR.iterdir() if (d / CONFIG).is_file() and (d / WEIGHTS).is_file()
    )


def builtin_dir(uri: str) -> Path:
    """The folder of ``builtin:NAME``; ArtifactError listing the available names otherwise."""
    name = uri[len(BUILTIN) :]
    if name not in builtin_names():
        available = ", ".join(BUILTIN + n for n in builtin_names()) or "none in this installation"
        raise ArtifactError(f"unknown built-in model {uri!r}; available: {available}")
    return BUILTIN_DIR / name


ONNX_SUFFIX = ".onnx"


def is_onnx(model_uri: str) -> bool:
    """A model given as an ONNX graph file (``m.onnx``, local or s3://) rather than a folder."""
    return model_uri.lower().endswith(ONNX_SUFFIX)


def resolve_model_uri(model_uri: str, endpoint: str | None) -> str:
    """The URI workers should load: ``builtin:NAME`` as is (every node has the package), a folder
    or prefix (or an ``.onnx`` file) resolved to an absolute one (workers may run in another
    directory)."""
    if model_uri.startswith(BUILTIN):
        builtin_dir(model_uri)
        return model_uri
    return cached_store(model_uri, endpoint).root


def read_onnx(model_uri: str, endpoint: str | None) -> bytes:
    """The bytes of an ONNX graph file, local or s3://; ArtifactError naming it when missing."""
    store = cached_store(posixpath.dirname(model_uri.rstrip("/")) or ".", endpoint)
    return _read_model_file(store, posixpath.basename(model_uri.rstrip("/")))


def export_builtin(model_dir: str | os.PathLike, name: str, card: dict[str, Any]) -> Path:
    """Copy a trained model folder into the package as ``builtin:NAME``, weights stored as
    float16 (half the size; loaded back into float32) and ``card`` (task, headline) added to its
    config. A developer tool: see MODELS.md."""
    from safetensors.torch import save_file

    model, config = load_model(model_dir)
    dest = BUILTIN_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model_state(model).items()}
    save_file(state, str(dest / WEIGHTS), metadata={"format": "pt"})
    os.chmod(dest / WEIGHTS, 0o644)  # package data: readable by everyone who installs it
    config = {k: v for k, v in config.items() if k != "metrics"} | {
        "card": card,
        "metrics": config.get("metrics"),
    }
    (dest / CONFIG).write_text(
        json.dumps(json_safe(config), indent=2, default=_json_default, allow_nan=False)
    )
    return dest


def model_config(model_uri: str, endpoint: str | None) -> dict:
    """The checked config.json of ``builtin:NAME`` or a model folder (local or s3://), without
    loading the weights (no torch). ArtifactError when it is missing or not a model config."""
    if model_uri.startswith(BUILTIN):
        where, text = (
            str(builtin_dir(model_uri) / CONFIG),
            (builtin_dir(model_uri) / CONFIG).read_bytes(),
        )
    else:
        store = cached_store(model_uri, endpoint)
        where, text = store.uri(CONFIG), _read_model_file(store, CONFIG)
    try:
        return check_config(json.loads(text), where)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{where} is not valid JSON ({exc})") from None


def _read_model_file(store, name: str) -> bytes:
    """One file of a model folder in a store; ArtifactError naming it when missing or unreadable."""
    try:
        return store.read_bytes(name)
    except FileNotFoundError:
        raise ArtifactError(
            f"{store.uri(name)} not found (expected a raydenoise model folder)"
        ) from None
    except Exception as exc:
        raise ArtifactError(f"{store.uri(name)}: cannot read ({object_error(exc)})") from None


def model_fingerprint(model_uri: str, endpoint: str | None) -> str:
    """A hash of the model's config.json and weights, or of its ONNX graph (16 hex digits): two
    models with the same fingerprint make the same outputs; a folder retrained in place gets a
    new one."""
    if is_onnx(model_uri):
        files = [read_onnx(model_uri, endpoint)]
    elif model_uri.startswith(BUILTIN):
        files = [(builtin_dir(model_uri) / name).read_bytes() for name in (CONFIG, WEIGHTS)]
    else:
        store = cached_store(model_uri, endpoint)
        files = [_read_model_file(store, name) for name in (CONFIG, WEIGHTS)]
    h = hashlib.sha256()
    for data in files:
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def takes_level(model_uri: str, endpoint: str | None) -> bool:
    """Whether the model is conditioned on the noise level (``--sigma`` applies to it)."""
    if is_onnx(model_uri):
        from .onnx_graph import check_onnx

        return check_onnx(read_onnx(model_uri, endpoint), model_uri)["level"] is not None
    return model_config(model_uri, endpoint).get("model") == "swift-cond"


def load_model_uri(model_uri: str, endpoint: str | None):
    """(model, config) from ``builtin:NAME``, or a model folder, local or s3:// (downloaded to a
    temporary folder that is removed once the weights are loaded)."""
    if model_uri.startswith(BUILTIN):
        return load_model(builtin_dir(model_uri))
    store = cached_store(model_uri, endpoint)
    if not store.is_s3:
        return load_model(store.root)
    with tempfile.TemporaryDirectory(prefix="raydenoise-model-") as local:
        for name in (CONFIG, WEIGHTS):
            with open(os.path.join(local, name), "wb") as f:
                f.write(_read_model_file(store, name))
        return load_model(local)


def save_optimizer(
    directory: str | os.PathLike, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
) -> None:
    """Split the optimizer's state_dict into tensors (safetensors) and the rest (JSON)."""
    import torch
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    d = Path(directory)
    save_file(tensors, str(d / OPTIMIZER))
    state = {"optimizer": {"param_groups": sd["param_groups"], "scalars": scalars}, **extra}
    (d / TRAIN_STATE).write_text(
        json.dumps(json_safe(state), indent=2, default=_json_default, allow_nan=False)
    )


def load_train_state(
    directory: str | os.PathLike, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore the optimizer from ``save_optimizer`` files; returns the rest of train_state.json."""
    from safetensors.torch import load_file

    d = Path(directory)
    state = json.loads((d / TRAIN_STATE).read_text())
    tensors = load_file(str(d / OPTIMIZER), device="cpu")
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in {**tensors, **state["optimizer"]["scalars"]}.items():
        pid, key = name.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict(
        {"state": per_param, "param_groups": state["optimizer"]["param_groups"]}
    )
    return state


def _json_default(value: Any) -> Any:
    torch = sys.modules.get("torch")  # a tensor exists only where torch is loaded
    if torch is not None and isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value != value:
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
