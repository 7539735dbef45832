"""Model and training-state files: safetensors for tensors, JSON for everything else. No pickle,
no Ray here.

A model directory holds ``config.json`` (architecture, hyper-parameters, data reference,
metrics) and ``model.safetensors``; ``load_model`` rebuilds the network from the config alone.
A training checkpoint adds ``optimizer.safetensors`` + ``train_state.json`` (epoch, optimizer
scalars, scheduler and AMP scaler state, metric history).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import build_model

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"


class ArtifactError(ValueError):
    """A model directory that is missing files or does not match its config."""


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model  # DDP wraps the model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics included) as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


def save_model_dir(directory: str | os.PathLike, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``config.json`` and ``model.safetensors``; config must name ``model`` and ``width``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(model_state(model), str(d / WEIGHTS), metadata={"format": "pt"})
    (d / CONFIG).write_text(json.dumps(config, indent=2, default=_json_default))


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network named in ``config.json`` and load ``model.safetensors`` into it (strict).

    Returns (model in eval mode, config). ArtifactError names what is missing or mismatched.
    """
    d = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (d / name).is_file():
            raise ArtifactError(f"{d}: missing {name} (expected a raydenoise model folder)")
    try:
        config = json.loads((d / CONFIG).read_text())
        model = build_model(config["model"], config.get("width"))
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"{d / CONFIG}: {exc}") from None
    try:
        model.load_state_dict(load_file(str(d / WEIGHTS), device="cpu"), strict=True)
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"{d / WEIGHTS} does not match {config['model']}: {str(exc)[:300]}") from None
    return model.to(device).eval(), config


def save_optimizer(directory: str | os.PathLike, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
    """Split the optimizer's state_dict into tensors (safetensors) and the rest (JSON)."""
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
    (d / TRAIN_STATE).write_text(json.dumps(state, indent=2, default=_json_default))


def load_train_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``save_optimizer`` files; returns the rest of train_state.json."""
    d = Path(directory)
    state = json.loads((d / TRAIN_STATE).read_text())
    tensors = load_file(str(d / OPTIMIZER), device="cpu")
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in {**tensors, **state["optimizer"]["scalars"]}.items():
        pid, key = name.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    return state


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value != value:
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
