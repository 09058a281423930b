"""KServe v2 / Open Inference Protocol endpoints, Triton-compatible.

The family is the model; its variants are the model's versions. ``POST
/v2/models/{m}/infer`` runs whatever variant the controller chose; ``.../versions/{v}/infer``
pins one. The input is the family's native tensor (``input``, FP32, normalised, N x C x S x
S): smaller-resolution variants get it resized. UINT8 pixels (same shape) are normalised
by the server, and a BYTES tensor of encoded images (PNG/JPEG) is decoded like /v1/infer.
A detection family answers its raw head tensor per frame (YOLO layout, boxes in model-input
pixels, no NMS): /v1/infer answers decoded boxes in the posted image's pixels.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response

import edge_service
from edge_service.data.letterbox import Letterbox
from edge_service.errors import BadInputError, EdgeServiceError, NotFoundError
from edge_service.runtime.batcher import BatchResult
from edge_service.runtime.postprocess import top_k
from edge_service.server.deps import InferenceDep, ServiceDep, read_body
from edge_service.server.inference import (
    FrameJob,
    TensorJob,
    check_pin,
    check_variant,
    decode_frames,
    elapsed_ms,
    run_job,
    unknown_model,
)
from edge_service.server.kserve_detect import (
    DECODED,
    DETECTION_OUTPUTS,
    detection_tensors,
    raw_output,
)
from edge_service.server.kserve_openapi import INFER_OPENAPI, errors
from edge_service.server.service import Service
from edge_service.server.v2codec import (
    TRITON_TYPES,
    OutTensor,
    V2Request,
    encode_response,
    parse_request,
)

router = APIRouter(tags=["kserve-v2"])


ModelName = Annotated[str, Path(description="the family name (one model per server)")]
Version = Annotated[str, Path(description="a variant id, e.g. base@int8")]
# "statistics" is served (/v2/models/{m}/stats) but not announced: perf_analyzer reads
# announced statistics and parses every version as an integer, and ours are variant ids.
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]


def _declare_version(version: Version) -> None:
    """Declares (and documents) the ``{version}`` of the /versions/{version}/ routes."""


def _requested_version(request: Request) -> str | None:
    """The variant a /versions/{version}/ route names; None on the model's own routes (one
    handler serves both, and a ``version`` parameter would leak into them as ?version=)."""
    version = request.path_params.get("version")
    return version if isinstance(version, str) else None


VERSION_PATH = [Depends(_declare_version)]
RequestedVersion = Annotated[str | None, Depends(_requested_version)]


def _model(service: Service, name: str) -> None:
    if name != service.catalog.family:
        raise unknown_model(name, service.catalog.family)


def input_shape(service: Service) -> list[int]:
    """The family's native input, N x C x S x S with N = -1."""
    spec = service.catalog.input
    channels = 1 if spec.color == "gray" else 3
    size = service.preprocess().size
    return [-1, channels, size, size]


def output_meta(service: Service) -> tuple[str, list[int]]:
    """The output tensor's name and shape (N = -1)."""
    name = service.output_name()
    if service.catalog.task == "detection":
        return name, [-1, -1, -1]
    return name, [-1, len(service.catalog.labels)]


@router.get("/v2", responses=errors(503))
async def server_metadata(service: ServiceDep) -> dict[str, Any]:
    """Server metadata: name, version and protocol extensions."""
    return {"name": "edge-service", "version": edge_service.__version__, "extensions": EXTENSIONS}


@router.get("/v2/models/stats", responses=errors(503))
async def all_model_stats(service: ServiceDep) -> dict[str, Any]:
    """Triton-style statistics of every version (variant) of the one model served."""
    return {"model_stats": service.telemetry.model_stats(service.catalog.family)}


@router.get("/v2/models/{model}/stats", responses=errors(404, 503))
@router.get(
    "/v2/models/{model}/versions/{version}/stats",
    responses=errors(404, 503),
    dependencies=VERSION_PATH,
)
async def model_stats(
    service: ServiceDep, model: ModelName, version: RequestedVersion
) -> dict[str, Any]:
    """Triton-style statistics per version (variant): counts and cumulative times."""
    _model(service, model)
    check_variant(service, version)
    stats = service.telemetry.model_stats(service.catalog.family)
    if version is not None:
        stats = [s for s in stats if s["version"] == version]
    return {"model_stats": stats}


@router.get("/v2/models/{model}", responses=errors(404, 503))
@router.get(
    "/v2/models/{model}/versions/{version}", responses=errors(404, 503), dependencies=VERSION_PATH
)
async def model_metadata(
    service: ServiceDep, model: ModelName, version: RequestedVersion
) -> dict[str, Any]:
    """Model metadata: versions (variants), inputs and outputs."""
    _model(service, model)
    check_variant(service, version)
    out_name, out_shape = output_meta(service)
    return {
        "name": model,
        "versions": [version] if version else [v.id for v in service.catalog.variants],
        "platform": "edge-service",
        "inputs": [
            {"name": service.catalog.input.name, "datatype": "FP32", "shape": input_shape(service)}
        ],
        "outputs": [{"name": out_name, "datatype": "FP32", "shape": out_shape}, *_decoded(service)],
    }


def _decoded_specs(service: Service) -> list[tuple[str, str, list[int]]]:
    """A detection family's decoded outputs (`kserve_detect`), else none."""
    return list(DECODED) if service.catalog.task == "detection" else []


def _decoded(service: Service) -> list[dict[str, object]]:
    return [{"name": n, "datatype": t, "shape": d} for n, t, d in _decoded_specs(service)]


@router.get("/v2/models/{model}/ready", responses=errors(404, 503))
@router.get(
    "/v2/models/{model}/versions/{version}/ready",
    responses=errors(404, 503),
    dependencies=VERSION_PATH,
)
async def model_ready(
    service: ServiceDep, model: ModelName, version: RequestedVersion
) -> JSONResponse:
    """200 when the model (or that version) can serve now, else 503 (a version the
    build's accuracy gate rejected never can)."""
    _model(service, model)
    check_variant(service, version)
    ok = service.ready_for(version) and (version is None or _not_rejected(service, version))
    return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)


def _not_rejected(service: Service, version: str) -> bool:
    return service.catalog.variant(version).status != "rejected"


@router.get("/v2/models/{model}/config", responses=errors(404, 503))
@router.get(
    "/v2/models/{model}/versions/{version}/config",
    responses=errors(404, 503),
    dependencies=VERSION_PATH,
)
async def model_config(
    service: ServiceDep, model: ModelName, version: RequestedVersion
) -> dict[str, Any]:
    """The model configuration in Triton's JSON form (what perf_analyzer reads)."""
    _model(service, model)
    check_variant(service, version)
    out_name, out_shape = output_meta(service)
    s = service.settings
    return {
        "name": model,
        "platform": "edge-service",
        "backend": "edge-service",
        "max_batch_size": service.batcher.max_batch,
        "input": [
            {
                "name": service.catalog.input.name,
                "data_type": TRITON_TYPES["FP32"],
                "format": "FORMAT_NCHW",
                "dims": input_shape(service)[1:],
            }
        ],
        "output": [
            {"name": out_name, "data_type": TRITON_TYPES["FP32"], "dims": out_shape[1:]},
            *[
                {"name": n, "data_type": TRITON_TYPES[t], "dims": dims[1:]}
                for n, t, dims in _decoded_specs(service)
            ],
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(s.batch_max_delay_ms * 1000),
            "preferred_batch_size": [service.batcher.max_batch],
        },
        "version_policy": {"all": {}},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {
            "variants": {"string_value": ",".join(v.id for v in service.catalog.variants)}
        },
    }


_INFER_DOC: dict[str, Any] = INFER_OPENAPI | {"dependencies": [InferenceDep]}


@router.post("/v2/models/{model}/infer", **_INFER_DOC)
@router.post(
    "/v2/models/{model}/versions/{version}/infer",
    **(_INFER_DOC | {"dependencies": [InferenceDep, *VERSION_PATH]}),
)
async def infer(
    request: Request,
    service: ServiceDep,
    model: ModelName,
    version: RequestedVersion,
    inference_header_content_length: Annotated[str | None, Header()] = None,
) -> Response:
    """Run inference (JSON tensors, or Triton's binary-data extension)."""
    started = time.perf_counter()
    try:
        _model(service, model)
        check_pin(service, version)
        body = await read_body(request, service.settings.max_body_bytes)
        req = parse_request(body, inference_header_content_length)
        job, rows = await _job(service, req)
        decoded = time.perf_counter()
        results = await run_job(service, job, rows, version)
    except EdgeServiceError as exc:
        service.telemetry.record("v2_infer", version or "-", exc.code, elapsed_ms(started))
        raise
    geometry = job.geometry if isinstance(job, FrameJob) else []
    content, header_len = _respond(service, req, results, geometry)
    total = elapsed_ms(started)
    variant = results[0].variant_id
    service.telemetry.record(
        "v2_infer", variant, "ok", total, frames=rows, engine_ms=_engine_share(results)
    )
    service.telemetry.record_model(
        variant,
        rows,
        total_ms=total,
        input_ms=(decoded - started) * 1e3,
        queue_ms=max(r.queue_ms for r in results),
        infer_ms=sum(r.engine_ms for r in results),
        batch=max(r.batch_rows for r in results),
    )
    if header_len is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_len)},
    )


async def _job(service: Service, req: V2Request) -> tuple[FrameJob | TensorJob, int]:
    """The one input as a batcher job: a float tensor, pixels, or encoded images."""
    name = service.catalog.input.name
    if len(req.inputs) != 1 or req.inputs[0].name != name:
        raise BadInputError(
            f"the model takes one input named {name!r}; got {[t.name for t in req.inputs]}"
        )
    tensor = req.inputs[0]
    want = input_shape(service)
    if tensor.datatype == "BYTES":
        assert tensor.items is not None
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadInputError(
                f"BYTES input: shape must be [N] or [N, 1] (one image each), "
                f"got {list(tensor.shape)}"
            )
        if not tensor.items:
            raise BadInputError("BYTES input: the batch is empty; send at least one image")
        images = await decode_frames(service, tensor.items)
        return FrameJob(service.preprocess, images), len(images)
    if list(tensor.shape[1:]) != want[1:] or len(tensor.shape) != 4:
        raise BadInputError(
            f"input {name!r}: shape must be [N, {', '.join(map(str, want[1:]))}], got "
            f"{list(tensor.shape)}"
        )
    rows = tensor.shape[0]
    if rows < 1:
        raise BadInputError(f"input {name!r}: the batch is empty")
    assert tensor.array is not None
    if tensor.datatype == "UINT8":
        images = [img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0) for img in tensor.array]
        return FrameJob(service.preprocess, images), rows
    if tensor.datatype not in ("FP32", "FP16", "FP64"):
        raise BadInputError(
            f"input {name!r}: datatype must be FP32 (normalised), UINT8 (pixels) or BYTES "
            f"(encoded images), got {tensor.datatype}"
        )
    x = np.ascontiguousarray(tensor.array, dtype=np.float32)
    if not np.isfinite(x).all():
        raise BadInputError(f"input {name!r}: the tensor has NaN or infinite values")
    return TensorJob(service.preprocess, x), rows


def _respond(
    service: Service,
    req: V2Request,
    results: list[BatchResult],
    geometry: list[Letterbox | None],
) -> tuple[bytes, int | None]:
    out_name = results[0].info.output_names[0]  # the engine that ran: no lease needed
    detection = service.catalog.task == "detection"
    names = [out_name, *(DETECTION_OUTPUTS if detection else ())]
    wanted = req.outputs
    if wanted is None:
        wanted_list = [(name, req.binary_default, 0) for name in names]
    else:
        unknown = [o.name for o in wanted if o.name not in names]
        if unknown:
            raise NotFoundError(f"unknown output(s) {unknown}; the model's outputs are {names}")
        wanted_list = [(o.name, o.binary, o.classification) for o in wanted]
    if detection and any(k for _, _, k in wanted_list):
        raise BadInputError(
            "the classification parameter is for classification families; this detector "
            f"answers its raw output {out_name!r} and decoded boxes {list(DETECTION_OUTPUTS)}"
        )
    tensors = []
    for name, binary, k in wanted_list:
        if name in DETECTION_OUTPUTS:
            continue
        output = raw_output(results)
        if k:
            rows = top_k(output, service.catalog.labels, k)
            items = [f"{p.score:f}:{p.index}:{p.label}".encode() for row in rows for p in row]
            shape = [output.shape[0], min(k, output.shape[1])]
            tensors.append(OutTensor(name, "BYTES", shape, items=items, binary=binary))
        else:
            arr = output.astype(np.float32, copy=False)
            tensors.append(OutTensor(name, "FP32", list(arr.shape), array=arr, binary=binary))
    decoded = [(n, b) for n, b, _ in wanted_list if n in DETECTION_OUTPUTS]
    if decoded:
        tensors += detection_tensors(results, service.catalog.labels, geometry, decoded)
    order = {name: i for i, (name, _, _) in enumerate(wanted_list)}
    tensors.sort(key=lambda t: order[t.name])
    version = ",".join(sorted({r.variant_id for r in results}))
    return encode_response(service.catalog.family, version, req.id, tensors)


def _engine_share(results: list[BatchResult]) -> float:
    """This request's share of the engine calls it rode in (a batch is shared by rows)."""
    return float(sum(r.engine_ms * r.output.shape[0] / max(r.batch_rows, 1) for r in results))
