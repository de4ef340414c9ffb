"""The HTTP contract of `imgcls serve`: response bodies, the error body, and which statuses each route answers.

FastAPI writes `/openapi.json` from these declarations, so a client generated from it (for example
by openapi-python-client) knows the multipart fields, the query ranges, every answer's schema and
every error status; `tests/deploy/test_contract.py` holds the server to it with schemathesis.
A route added for a new task declares its body with `File(...)`, its answer with a model here and
its errors with `error_responses(...)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Every status a route of imgcls serve can answer with an error body, and when.
ERROR_STATUSES: dict[int, str] = {
    400: "unreadable upload: `bad_multipart` (malformed body), `empty_file`, `unreadable_image` (truncated or corrupt)",
    401: "`unauthorized`: missing or wrong API key (header X-API-Key or Authorization: Bearer); only when the server has a key",
    404: "`not_found`: no such route",
    405: "`method_not_allowed`: the route exists for other methods (listed in the Allow header)",
    411: "`length_required`: no Content-Length (a chunked body could not be limited before it is stored)",
    413: "a limit: `too_large` (request bytes), `file_too_large`, `too_many_files`, `too_many_pixels` (per image or request)",
    415: "`not_multipart` (the body is not multipart/form-data) or `not_an_image` (a file no image parser accepts)",
    422: "`invalid_request` (a query value out of range), `no_files` (no file in the field), `one_file` (more than one)",
    500: "`internal_error`: the server failed on this request (details in its log, not here)",
    501: "`not_available`: Grad-CAM needs a PyTorch model file; this server runs an export",
    503: "`busy`: too many decoded images are waiting for the model over all requests; retry shortly",
}
UPLOAD_ERRORS = (400, 411, 413, 415, 422, 500, 503)  # what any route taking images can answer, besides 401


def image_media_types() -> list[str]:
    """The media types of the image formats the server parses (imgcls.data.image_io.IMAGE_FORMATS)."""
    from PIL import Image

    from imgcls.data.image_io import IMAGE_FORMATS

    Image.init()  # registers every plugin's MIME type
    return [Image.MIME.get(f, f"image/{f.lower()}") for f in IMAGE_FORMATS]


def upload_encoding(field: str) -> dict[str, Any]:
    """`openapi_extra=` of a route taking images in multipart field `field`: the part's accepted media types
    (OpenAPI's `encoding`), merged into FastAPI's generated request body."""
    return {"requestBody": {"content": {"multipart/form-data": {
        "encoding": {field: {"contentType": ", ".join(image_media_types())}}}}}}


class ErrorDetail(BaseModel):
    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="a stable machine-readable reason, e.g. not_an_image, too_many_pixels")
    message: str = Field(description="what was wrong, naming the file or value")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status with the error body and its meaning."""
    return {s: {"model": ErrorBody, "description": ERROR_STATUSES[s]} for s in statuses}


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="probability after the model file's temperature, in [0, 1]")


class Prediction(BaseModel):
    filename: str = Field(description="the uploaded file's name (or 'file N' when it had none)")
    label: str = Field(description="the most likely class")
    score: float = Field(description="its probability")
    index: int = Field(description="its index in the model's classes")
    top_k: list[LabelScore] = Field(description="the k most likely classes, most likely first")


class PredictAnswer(BaseModel):
    model: str = Field(description="the model's architecture")
    predictions: list[Prediction] = Field(description="one per uploaded file, in the order sent")


class ExplainAnswer(Prediction):
    overlay: str = Field(description="a PNG data URL (data:image/png;base64,...) of the Grad-CAM of the predicted class")


class SegmentAnswer(BaseModel):
    filename: str = Field(description="the uploaded file's name (or 'file 1' when it had none)")
    label: str = Field(description="the class covering most pixels after the first (the background)")
    pixel_share: dict[str, float] = Field(description="each class found and its share of the pixels")
    mask: str = Field(description="a PNG data URL of the mask at the image's size: palette pixels whose values are the "
                                  "class indices (the model's classes, in order)")
    overlay: str = Field(description="a JPEG data URL: the photo with each class's pixels tinted")


class Detection(BaseModel):
    label: str
    index: int = Field(description="the class's index in the model's classes")
    score: float = Field(description="the detector's confidence, in [0, 1]")
    box: list[float] = Field(min_length=4, max_length=4,
                             description="[x1, y1, x2, y2]: left, top, right, bottom in the image's pixels")


class DetectResult(BaseModel):
    filename: str = Field(description="the uploaded file's name (or 'file N' when it had none)")
    width: int = Field(description="the image's width in pixels (the boxes' frame)")
    height: int
    label: str = Field(description="the class of the most confident detection ('' when none)")
    score: float = Field(description="its score (0 when none)")
    detections: list[Detection] = Field(description="the objects found scoring at least min_score, best first")


class DetectAnswer(BaseModel):
    model: str = Field(description="the model's architecture")
    results: list[DetectResult] = Field(description="one per uploaded file, in the order sent")


class Health(BaseModel):
    status: str = Field(description="always 'ok' while the server answers")
    uptime_seconds: float
    model_calls: int = Field(description="model calls made so far (concurrent requests share calls)")


class Preprocess(BaseModel):
    input_size: list[int] = Field(description="[height, width] the model sees")
    channels: int
    mean: list[float]
    std: list[float]
    resize: int | None = Field(default=None, description="shorter side resized to this before the centre crop")


class ModelInfo(BaseModel):
    arch: str
    task: str = Field(description="classify (POST /predict, /explain), segment (POST /segment) or detect (POST /detect)")
    format: str = Field(description="safetensors (a model file), onnx or pt2")
    classes: list[str]
    num_classes: int
    preprocess: Preprocess
    temperature: float = Field(description="softmax temperature fitted on validation data (1 = none)")
    explain: bool = Field(description="whether POST /explain is available (PyTorch model files)")
    top_k: int = Field(description="labels per image when a request gives no top_k")
    metrics: dict[str, float | int | str] = Field(description="the model file's recorded metrics")
    limits: dict[str, int] = Field(description="the server's limits (bytes, files, pixels, images in flight)")


def binary_files(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with `format: binary` beside FastAPI's `contentMediaType: application/octet-stream`
    on every uploaded file: OpenAPI 3.0's spelling, which client generators (openapi-python-client,
    openapi-generator) read as a file; without it they send the file as text."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "string" and node.get("contentMediaType") == "application/octet-stream":
                node.setdefault("format", "binary")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return schema
