"""`serve`: a model file (or its ONNX / .pt2 export) behind an HTTP API, with a web page.

    GET  /          the web page: drop or choose an image, see the top-k labels and a Grad-CAM overlay
    GET  /health    {"status": "ok"}  (never needs the API key)
    GET  /model     classes, preprocessing, metrics
    POST /predict   multipart field `files` (one or several images) -> top-k per image
    POST /explain   multipart field `file` (one image) -> top-k and a Grad-CAM overlay (PyTorch model files)

Every bad request gets a JSON 4xx answer {"error": {"status", "code", "message"}}, and the server
goes on serving: uploads are size-limited while they are read, images are checked for their pixel
count before they are decoded (decompression bombs), and undecodable or truncated files are refused.
Concurrent requests are batched: the model runs once for the images of all requests that arrive
within `batch_window_ms` (up to `max_batch` images), in one worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import Request, UploadFile  # at module level: FastAPI resolves the endpoints' annotations in this module
from PIL import Image

from imgcls.config import ServeConfig
from imgcls.data.image_io import IMAGE_FORMATS, ImageProblem
from imgcls.data.image_io import decode_image as decode_bytes
from imgcls.deploy.uploads import BadInput, checked_form, read_uploads
from imgcls.errors import ImgclsError

log = logging.getLogger("imgcls.serve")


DEFAULTS = ServeConfig()  # host, port, top_k, batching and the limits below: defined once, in imgcls.config


@dataclass
class ServeLimits:
    max_file_bytes: int = int(DEFAULTS.max_file_mb * 2**20)  # per uploaded file
    max_request_bytes: int = int(DEFAULTS.max_request_mb * 2**20)  # whole request (Content-Length), checked before reading
    max_files: int = DEFAULTS.max_files  # files per request
    max_pixels: int = DEFAULTS.max_pixels  # width x height of one image, checked before decoding
    max_request_pixels: int = 120_000_000  # all images of one request together (decoded RGB: ~3 bytes each)
    max_inflight_images: int = 512  # images decoded and waiting for the model, over all requests; beyond: 503
    max_top_k: int = 100


def decode_image(data: bytes, name: str, channels: int, max_pixels: int) -> Image.Image:
    """An uploaded file's bytes as an image in the model's mode; BadInput naming the file otherwise."""
    if not data:
        raise BadInput(400, "empty_file", f"{name}: the file is empty")
    try:
        return decode_bytes(io.BytesIO(data), name, channels=channels, max_pixels=max_pixels)
    except ImageProblem as e:
        status = {"not_an_image": 415, "too_many_pixels": 413}.get(e.code, 400)
        raise BadInput(status, e.code, str(e)) from None


def header_pixels(data: bytes) -> int:
    """Width x height from an image's header (nothing decoded); 0 when it is no image (decoding will say so)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            return img.width * img.height
    except Exception:  # noqa: BLE001 - any parse failure: the decode step reports it properly
        return 0


class MicroBatcher:
    """Gather the images of concurrent requests into one model call (at most `max_batch` images or `window` s)."""

    def __init__(self, fn: Callable[[list[Image.Image]], torch.Tensor], *, max_batch: int = 64, window: float = 0.005):
        self.fn, self.max_batch, self.window = fn, max_batch, window
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgcls-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.calls = 0  # model calls made (for tests and /health)

    async def submit(self, images: list[Image.Image]) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.queue = asyncio.Queue()
            self.task = loop.create_task(self._worker())
        fut = loop.create_future()
        await self.queue.put((images, fut))
        return await fut

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n = len(items[0][0])
            deadline = loop.time() + self.window
            while n < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                items.append(item)
                n += len(item[0])
            images = [im for imgs, _ in items for im in imgs]
            try:
                out = await loop.run_in_executor(self.executor, self.fn, images)
                self.calls += 1
            except Exception as e:  # the model failed: every waiting request learns why
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            i = 0
            for imgs, fut in items:
                if not fut.done():
                    fut.set_result(out[i:i + len(imgs)])
                i += len(imgs)


def page_html() -> str:
    return resources.files("imgcls.deploy").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(ckpt: str | Path, *, device: str = DEFAULTS.device, api_key: str | None = None, top_k: int = DEFAULTS.top_k,
               limits: ServeLimits | None = None, max_batch: int = DEFAULTS.max_batch,
               batch_window_ms: float = DEFAULTS.batch_window_ms):
    """The FastAPI app serving `ckpt` (a model file, .onnx or .pt2). Run it with uvicorn, or test it with TestClient.

    Its OpenAPI document (/openapi.json, /docs) declares every route's multipart body, query ranges,
    answers and error statuses (imgcls.deploy.contract).
    """
    from fastapi import FastAPI, File, Query, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.routing import APIRoute
    from fastapi.security import APIKeyHeader, HTTPBearer
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from imgcls.deploy.contract import (
        UPLOAD_ERRORS,
        DetectAnswer,
        ExplainAnswer,
        Health,
        ModelInfo,
        PredictAnswer,
        SegmentAnswer,
        binary_files,
        error_responses,
        upload_encoding,
    )
    from imgcls.predict import Predictor

    limits = limits or ServeLimits()
    if api_key is not None and not api_key.strip():
        raise ImgclsError("api_key is empty: give a real key, or none to serve without one")
    predictor = Predictor.load(ckpt, device=device)
    meta = predictor.meta
    fmt = Path(ckpt).suffix.lstrip(".").lower()
    can_explain = isinstance(predictor.model, torch.nn.Module) and predictor.task == "classify"  # Grad-CAM: gradients

    segmenter = predictor.task == "segment"

    detector = predictor.task == "detect"

    def run_model(images: list[Image.Image]) -> torch.Tensor | list[dict]:
        if detector:  # every box the detector keeps: each request applies its own min_score
            return predictor.detect(images, min_score=0.0)
        if segmenter:  # (N, K, h, w) logits at the model's input size: each request resizes its own to its image
            return predictor.logits(images)
        return (predictor.logits(images) / predictor.temperature).softmax(1)

    batcher = MicroBatcher(run_model, max_batch=max_batch, window=batch_window_ms / 1000)
    decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imgcls-decode")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        decode_pool.shutdown(wait=False, cancel_futures=True)
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    # Routes that need the key, and the upload field (name, one file only) of routes that take images.
    # Both are checked before FastAPI reads the body (GuardedRoute), so a request without the key, too
    # large, chunked or not multipart costs nothing, and the form is parsed with the server's limits.
    protected: set[str] = set()
    uploads: dict[str, tuple[str, bool]] = {}

    class GuardedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()
            path = self.path

            async def guarded(request: Request):
                if path in protected:
                    check_key(request)
                if path in uploads:  # the form, parsed within the limits; FastAPI's parsing reuses it
                    field, single = uploads[path]
                    request = await checked_form(request, field, single=single, max_request_bytes=limits.max_request_bytes,
                                                 max_files=limits.max_files)
                return await handler(request)

            return guarded

    app = FastAPI(title="imgcls", description=f"{meta.arch} ({predictor.task}) over {len(meta.classes)} classes. Every error "
                  "answers {\"error\": {\"status\", \"code\", \"message\"}}.", version="1", lifespan=lifespan)
    app.router.route_class = GuardedRoute

    def openapi() -> dict:  # FastAPI's document, with the uploads spelt as files for client generators
        if app.openapi_schema is None:
            app.openapi_schema = binary_files(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi
    app.state.batcher = batcher
    app.state.predictor = predictor
    started = time.time()

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status,
                            headers=headers)

    @app.exception_handler(BadInput)
    async def _bad(_: Request, e: BadInput):
        return error(e.status, e.code, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        # 405 carries Allow (RFC 9110): the methods the route has
        return error(e.status_code, codes.get(e.status_code, "bad_request"), str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception):  # a bug must not take the server down with it
        log.exception("internal error")  # the details go to the server's log, not to the client
        return error(500, "internal_error", "the server failed on this request (details in its log)")

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise BadInput(401, "unauthorized", "missing or wrong API key (header X-API-Key or Authorization: Bearer)")

    # The key as OpenAPI security schemes (either header), so that clients and schemathesis know of it;
    # the check itself is check_key's, made before the body is read.
    key_deps = [] if api_key is None else [
        Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")),
        Security(HTTPBearer(auto_error=False, description="the server's API key as a bearer token"))]
    key_errors = () if api_key is None else (401,)

    file_limits = {"max_file_bytes": limits.max_file_bytes, "max_request_bytes": limits.max_request_bytes}
    inflight = {"images": 0}

    @contextlib.asynccontextmanager
    async def admitted(files: list[tuple[str, bytes]]):
        """Bound the memory of decoded images: per request by pixel count, over requests by image count (503)."""
        pixels = 0
        for name, data in files:
            pixels += header_pixels(data)
            if pixels > limits.max_request_pixels:
                raise BadInput(413, "too_many_pixels", f"the images of this request have more than "
                                                       f"{limits.max_request_pixels:,} pixels together (at {name})")
        if inflight["images"] + len(files) > limits.max_inflight_images:
            raise BadInput(503, "busy", "the server has too many images in hand; retry shortly")
        inflight["images"] += len(files)
        try:
            yield
        finally:
            inflight["images"] -= len(files)

    async def decode_all(files: list[tuple[str, bytes]]) -> list[Image.Image]:
        """Decode in worker threads: the event loop keeps accepting and parsing other requests meanwhile."""
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*[
            loop.run_in_executor(decode_pool, decode_image, data, name, predictor.channels, limits.max_pixels)
            for name, data in files]))

    def result(probs: torch.Tensor, name: str, k: int) -> dict[str, Any]:
        return {"filename": name, **predictor.result(probs, min(k, len(meta.classes)))}  # the Predictor's top-k format

    kinds = ", ".join(f.lower() for f in IMAGE_FORMATS)
    mb = f"{limits.max_file_bytes / 2**20:g} MB"
    top_k_query = Query(default=top_k, ge=1, le=limits.max_top_k, description=f"labels per image, most likely first (at most the "
                                                                f"number of classes, {len(meta.classes)}); default {top_k}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(page_html())

    @app.get("/health", operation_id="health", response_model=Health, responses=error_responses(500),
             summary="Liveness: never needs the API key")
    async def health():
        return {"status": "ok", "uptime_seconds": round(time.time() - started, 1), "model_calls": batcher.calls}

    protected.add("/model")

    @app.get("/model", operation_id="model_info", response_model=ModelInfo, dependencies=key_deps,
             responses=error_responses(*key_errors, 500), summary="The model: classes, preprocessing, metrics, limits")
    async def model_info():
        p = meta.preprocess
        return {"arch": meta.arch, "task": predictor.task, "format": fmt, "classes": meta.classes, "num_classes": len(meta.classes),
                "preprocess": {"input_size": p.input_size, "channels": p.channels, "mean": p.mean, "std": p.std,
                               "resize": p.resize},
                "temperature": predictor.temperature, "explain": can_explain, "top_k": top_k,
                "metrics": {k: v for k, v in meta.metrics.items() if isinstance(v, (int, float, str))},
                "limits": vars(limits)}

    if segmenter:  # a segmentation model: POST /segment instead of /predict and /explain
        protected.add("/segment")
        uploads["/segment"] = ("file", True)

        @app.post("/segment", operation_id="segment", response_model=SegmentAnswer, dependencies=key_deps,
                  responses=error_responses(*key_errors, *UPLOAD_ERRORS), openapi_extra=upload_encoding("file"),
                  summary="Segment one image: the class of every pixel")
        async def segment(file: UploadFile = File(description=f"one image ({kinds}; at most {mb}, "
                                                              f"{limits.max_pixels:,} pixels)")):
            (name, data), = await read_uploads([file], **file_limits)
            async with admitted([(name, data)]):
                image, = await decode_all([(name, data)])
                logits = (await batcher.submit([image]))[0]
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(batcher.executor, _segment_answer, predictor, logits, image)
            return {"filename": name, **answer}

        return app

    if detector:  # a detection model: POST /detect instead of /predict and /explain
        protected.add("/detect")
        uploads["/detect"] = ("files", False)
        score_query = Query(predictor.min_score, ge=0.0, le=1.0, description="the lowest score of a box in the answer")

        @app.post("/detect", operation_id="detect", response_model=DetectAnswer, dependencies=key_deps,
                  responses=error_responses(*key_errors, *UPLOAD_ERRORS), openapi_extra=upload_encoding("files"),
                  summary="Find the objects in one or several images: a box, class and score each")
        async def detect(files: list[UploadFile] = File(description=f"one or several images ({kinds}; at most "
                                                                    f"{limits.max_files} files, {mb} each, "
                                                                    f"{limits.max_pixels:,} pixels each)"),
                         min_score: float = score_query):
            sent = await read_uploads(files, **file_limits)
            async with admitted(sent):
                images = await decode_all(sent)
                found = await batcher.submit(images)
            results = []
            for (name, _), image, r in zip(sent, images, found):
                dets = [d for d in r["detections"] if d["score"] >= min_score]
                results.append({"filename": name, "width": image.width, "height": image.height, "detections": dets,
                                "label": dets[0]["label"] if dets else "", "score": dets[0]["score"] if dets else 0.0})
            return {"model": meta.arch, "results": results}

        return app

    protected.add("/predict")
    uploads["/predict"] = ("files", False)

    @app.post("/predict", operation_id="predict", response_model=PredictAnswer, dependencies=key_deps,
              responses=error_responses(*key_errors, *UPLOAD_ERRORS), openapi_extra=upload_encoding("files"),
              summary="Classify one or several images")
    async def predict(files: list[UploadFile] = File(description=f"one or several images ({kinds}; at most "
                                                                 f"{limits.max_files} files, {mb} each, "
                                                                 f"{limits.max_pixels:,} pixels each)"),
                      top_k: int = top_k_query):
        sent = await read_uploads(files, **file_limits)
        async with admitted(sent):
            images = await decode_all(sent)
            probs = await batcher.submit(images)
        return {"model": meta.arch, "predictions": [result(p, name, top_k) for p, (name, _) in zip(probs, sent)]}

    protected.add("/explain")
    uploads["/explain"] = ("file", True)

    @app.post("/explain", operation_id="explain", response_model=ExplainAnswer, dependencies=key_deps,
              responses=error_responses(*key_errors, *UPLOAD_ERRORS, 501), openapi_extra=upload_encoding("file"),
              summary="Classify one image and show where the model looked (Grad-CAM)")
    async def explain(file: UploadFile = File(description=f"one image ({kinds}; at most {mb}, "
                                                          f"{limits.max_pixels:,} pixels)"),
                      top_k: int = top_k_query):
        if not can_explain:
            raise BadInput(501, "not_available", f"Grad-CAM needs the PyTorch model file; this server runs a .{fmt} export")
        (name, data), = await read_uploads([file], **file_limits)
        async with admitted([(name, data)]):
            image, = await decode_all([(name, data)])
            probs = (await batcher.submit([image]))[0]
            loop = asyncio.get_running_loop()
            overlay = await loop.run_in_executor(batcher.executor, _gradcam_png, predictor, image)
        return {**result(probs, name, top_k), "overlay": "data:image/png;base64," + base64.b64encode(overlay).decode()}

    return app


def _segment_answer(predictor, logits: torch.Tensor, image: Image.Image) -> dict[str, Any]:
    """The mask (a palette PNG of class indices) and the overlay (JPEG) as data URLs, with the pixel shares."""
    from imgcls.tasks.segment.draw import overlay, save_mask

    r = predictor.segment_result(logits, image.size)
    png, jpg = io.BytesIO(), io.BytesIO()
    save_mask(r["mask"], png, len(predictor.classes))
    overlay(image, r["mask"], len(predictor.classes)).save(jpg, format="JPEG", quality=85)
    return {"label": r["label"], "pixel_share": r["pixel_share"],
            "mask": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode(),
            "overlay": "data:image/jpeg;base64," + base64.b64encode(jpg.getvalue()).decode()}


def _gradcam_png(predictor, image: Image.Image) -> bytes:
    """Grad-CAM of the predicted class over the image as the model saw it, as PNG bytes (at least 224 px)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from imgcls.explain.gradcam import explain_images

    p = predictor.meta.preprocess
    try:
        exp = explain_images(predictor.model, [image], transform=predictor.transform, classes=predictor.classes,
                             methods=["gradcam"], mean=p.mean, std=p.std, device=predictor.device)[0]
    except ImgclsError as e:  # e.g. a dense net: no spatial layer to explain
        raise BadInput(422, "cannot_explain", str(e)) from None
    rgb = show_cam_on_image(exp.image.astype("float32"), exp.cams["gradcam"], use_rgb=True)
    im = Image.fromarray(rgb)
    if max(im.size) < 224:
        scale = 224 / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def serve(ckpt: str | Path, *, host: str = DEFAULTS.host, port: int = DEFAULTS.port, **kwargs) -> None:
    """Run the app with uvicorn until interrupted (kwargs: those of `create_app`)."""
    import uvicorn

    if not Path(ckpt).is_file():
        raise ImgclsError(f"ckpt={ckpt}: no such file")
    app = create_app(ckpt, **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="info")
