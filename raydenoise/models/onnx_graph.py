"""ONNX graphs: the contract a graph must meet to run as a model (check_onnx), what it declares,
and exporting a raydenoise model to one, checked against its torch output."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import RaydenoiseError

EXPORT_VERSION = (
    2  # raise when export_onnx changes what it writes: cached graphs are then made again
)

META_KEY = "raydenoise"  # ONNX metadata_props key holding a raydenoise export's NetInfo (JSON)


class EngineError(RaydenoiseError, ValueError):
    """A model the chosen engine cannot run; the message says what was expected."""


@dataclass(frozen=True)
class GraphArg:
    """One input or output of a graph as the contract sees it, whoever read it (the ``onnx``
    package on the driver, ONNX Runtime's session in a worker, which need not import onnx)."""

    name: str
    kind: str  # "float", "int64", ... for a tensor; "not a tensor" otherwise
    dims: list  # int for a fixed size, str for a named dynamic one, None for an unnamed one

    def describe(self) -> str:
        shape = ", ".join(str(d) if d is not None else "?" for d in self.dims)
        return f"{self.kind} of shape ({shape})"


def check_onnx(graph: bytes, where: str) -> dict[str, Any]:
    """The contract an ONNX graph must meet to run as a denoiser (check_contract), read from its
    bytes with the ``onnx`` package; EngineError when it is not an ONNX model."""
    import onnx

    try:
        model = onnx.load_model_from_string(graph)
    except Exception as exc:
        raise EngineError(
            f"{where}: not an ONNX model ({str(exc).splitlines()[0][:200]})"
        ) from None

    def arg(value_info) -> GraphArg:
        t = value_info.type.tensor_type
        kind = (
            onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "not a tensor"
        )
        dims = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim
        ]
        return GraphArg(value_info.name, kind, dims)

    init = {i.name for i in model.graph.initializer}
    inputs = [arg(i) for i in model.graph.input if i.name not in init]
    meta = {p.key: p.value for p in model.metadata_props}
    return check_contract(inputs, [arg(o) for o in model.graph.output], meta, where)


def check_session(session, where: str) -> dict[str, Any]:
    """check_contract on what an ONNX Runtime session declares (its inputs, outputs and
    metadata): the same contract as check_onnx, without importing the ``onnx`` package."""

    def arg(node) -> GraphArg:
        kind = node.type  # "tensor(float)", "seq(tensor(float))", ...
        inner = kind[len("tensor(") : -1] if kind.startswith("tensor(") else "not a tensor"
        return GraphArg(node.name, inner, list(node.shape or []))

    meta = dict(session.get_modelmeta().custom_metadata_map)
    inputs = [arg(i) for i in session.get_inputs()]
    return check_contract(inputs, [arg(o) for o in session.get_outputs()], meta, where)


def check_contract(
    inputs: list[GraphArg], outputs: list[GraphArg], meta: dict[str, str], where: str
) -> dict[str, Any]:
    """The contract an ONNX graph must meet to run as a denoiser; EngineError saying what was
    expected and what the graph declares otherwise. Returns its input, level input (or None)
    and output names and the raydenoise metadata ({} for a foreign graph)."""
    expect = (
        "expected an image-to-image graph: input float32 (N, 3, H, W) in [0, 1] with dynamic H and W "
        "(and optionally a (N,) float32 noise level), one output of the input's shape"
    )
    if not inputs or len(inputs) > 2 or len(outputs) != 1:
        raise EngineError(f"{where}: {len(inputs)} inputs and {len(outputs)} outputs; {expect}")
    image = inputs[0]
    dims = image.dims
    if image.kind != "float" or len(dims) != 4:
        raise EngineError(f"{where}: input {image.name!r} is {image.describe()}; {expect}")
    if dims[1] != 3:
        raise EngineError(
            f"{where}: input {image.name!r} has {dims[1]} channel(s); raydenoise gives RGB images "
            f"(3 channels); {expect}"
        )
    if isinstance(dims[2], int) or isinstance(dims[3], int):
        raise EngineError(
            f"{where}: input {image.name!r} has a fixed size {dims[2]}x{dims[3]}; raydenoise runs "
            "whole images and tiles of any size: export the graph with dynamic height and width "
            f"(e.g. torch.onnx.export(..., dynamic_axes=...)); {expect}"
        )
    info = _raydenoise_meta(meta)
    level, context, context_size = None, None, 0
    size = info.get("context")
    if len(inputs) == 2 and isinstance(size, int) and size > 0 and inputs[1].name == "context":
        # raydenoise's global networks: the whole image's thumbnail (N, 3, size, size) beside each tile
        if inputs[1].kind != "float" or inputs[1].dims[1:] != [3, size, size]:
            raise EngineError(
                f"{where}: input 'context' is {inputs[1].describe()}, not (N, 3, {size}, {size})"
            )
        context, context_size = "context", size
    elif len(inputs) == 2:
        if inputs[1].kind != "float" or len(inputs[1].dims) != 1:
            raise EngineError(
                f"{where}: second input {inputs[1].name!r} is {inputs[1].describe()}; {expect}"
            )
        level = inputs[1].name
    out = outputs[0]
    od = out.dims
    if (
        out.kind != "float"
        or len(od) != 4
        or (isinstance(od[1], int) and od[1] != 3)
        or any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(od[2:], dims[2:])
        )
    ):
        raise EngineError(
            f"{where}: output {out.name!r} is {out.describe()}, not an image like the input; {expect}"
        )
    return {
        "input": image.name,
        "level": level,
        "output": out.name,
        "meta": info,
        "context": context,
        "context_size": context_size,
    }


def _raydenoise_meta(props: dict[str, str]) -> dict:
    """The NetInfo a raydenoise export wrote into the graph's metadata ({} for a foreign graph)."""
    try:
        meta = json.loads(props.get(META_KEY, "{}"))
    except ValueError:
        meta = {}
    return meta if isinstance(meta, dict) else {}


def graph_parameters(graph: bytes) -> int:
    """The number of weights an ONNX graph holds (its initializers' elements)."""
    import onnx

    model = onnx.load_model_from_string(graph)
    return int(sum(np.prod(i.dims, dtype=np.int64) for i in model.graph.initializer))


@contextlib.contextmanager
def legacy_exporter() -> Iterator[None]:
    """Around ``torch.onnx.export(..., dynamo=False)``: torch's TorchScript exporter, chosen on
    purpose (the torch.export one needs onnxscript, not a dependency of ours, and the graphs it
    makes were not checked against our tiling contract). Only its two deprecation notices are
    silenced, by their text; any other warning is shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript-based ONNX export"
        )
        warnings.filterwarnings("ignore", message="The feature will be removed")
        yield


def export_onnx(
    model, config: dict[str, Any], path: str | None = None, opset: int = 17, fold: bool = True
) -> bytes:
    """The ONNX graph of a raydenoise network (dynamic batch, height and width; a conditioned
    network gets a second input ``level``, (N,) on the 0-255 scale), its NetInfo in the
    metadata, checked against the torch output on a test image before it is returned. What is
    exported is the network's inference form (``folding.inference_form``: the same function in
    fewer operations; ``fold=False`` exports the network as trained, for bench/per_image.py);
    the check compares it with the network as trained."""
    import io

    import onnx
    import torch

    from .architectures import is_conditioned
    from .folding import inference_form

    model = model.eval()
    cond = is_conditioned(model)
    size = getattr(model, "context", 0)
    from .engines import torch_info

    info = torch_info(config["model"], config.get("width"), cond, size)
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    args = (x, torch.tensor([15.0])) if cond else (x,)
    names = ["image", "level"] if cond else ["image"]
    dynamic = {"image": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}}
    if cond:
        dynamic["level"] = {0: "n"}
    if size:  # the thumbnail of the whole image, given beside every tile
        args, names = (x, torch.rand(1, 3, size, size)), ["image", "context"]
        dynamic["context"] = {0: "n"}
    buf = io.BytesIO()
    with legacy_exporter():
        torch.onnx.export(
            inference_form(model) if fold else model,
            args,
            buf,  # type: ignore[arg-type]
            input_names=names,
            output_names=["output"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    graph = onnx.load_model_from_string(buf.getvalue())
    graph.metadata_props.add(key=META_KEY, value=json.dumps(asdict(info)))
    data = graph.SerializeToString()
    check_export(model, data, cond, context=size)
    if path:
        with open(path, "wb") as f:
            f.write(data)
    return data


def check_export(
    model, graph: bytes, conditioned: bool, tolerance: float = 1e-4, context: int = 0
) -> float:
    """Run the graph with ONNX Runtime and the network with torch on an odd-sized test image
    (not a multiple of any stride); EngineError when they differ by more than ``tolerance``.
    Returns the largest difference."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.random((1, 37, 53, 3), dtype=np.float32)
    levels = np.array([20.0], np.float32) if conditioned else None
    from .engines import OrtEngine

    engine = OrtEngine(graph, "the exported graph", threads=1)
    with torch.inference_mode():
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        ref = (
            (model(t, torch.from_numpy(levels)) if conditioned else model(t))
            .permute(0, 2, 3, 1)
            .numpy()
        )
    diff = float(np.abs(engine.run(x, levels) - ref).max())
    if not diff <= tolerance:
        raise EngineError(
            f"the exported graph differs from the torch network by {diff:.2e} (over {tolerance:g})"
        )
    return diff
