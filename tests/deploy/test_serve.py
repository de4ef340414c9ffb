"""The HTTP server: good requests, every kind of bad one (JSON 4xx, the server keeps serving), API key, batching."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgcls.deploy.serve import MicroBatcher, ServeLimits, create_app
from imgcls.predict import Predictor


def png(color=(210, 40, 40), size=(12, 12), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data: decoding it would take GBs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def client(trained):
    app = create_app(trained[0], limits=ServeLimits(max_file_bytes=50_000, max_files=4))
    with TestClient(app) as c:
        yield c


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"status", "code", "message"} <= set(body["error"]), body
    assert body["error"]["status"] == r.status_code
    return body["error"]


def test_predict_one_and_several(client, trained):
    ckpt, root, _ = trained
    red = (root / "test" / "red" / "000.png").read_bytes()
    blue = (root / "test" / "blue" / "000.png").read_bytes()
    r = client.post("/predict", files=[("files", ("r.png", red, "image/png")), ("files", ("b.png", blue, "image/png"))],
                    params={"top_k": 2})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == ["r.png", "b.png"]
    expected = Predictor.load(ckpt, device="cpu").predict([str(root / "test" / "red" / "000.png"),
                                                           str(root / "test" / "blue" / "000.png")], top_k=2)
    for p, e in zip(preds, expected):
        assert p["label"] == e["label"] and p["score"] == pytest.approx(e["score"], abs=1e-5)
        assert len(p["top_k"]) == 2 and p["top_k"][0]["score"] >= p["top_k"][1]["score"]


def test_health_model_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/model").json()
    assert m["classes"] == ["blue", "green", "red"] and m["preprocess"]["input_size"] == [12, 12] and m["explain"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "fetch(" in page.text


@pytest.mark.parametrize("files, status, code", [
    ([("files", ("notes.jpg", b"this is text, not a JPEG", "image/jpeg"))], 415, "not_an_image"),
    ([("files", ("cut.png", png(size=(64, 64))[:-30], "image/png"))], 400, "unreadable_image"),
    ([("files", ("empty.png", b"", "image/png"))], 400, "empty_file"),
    ([("files", ("bomb.png", bomb_png(), "image/png"))], 413, "too_many_pixels"),
    ([("files", ("big.bmp", b"BM" + b"\0" * 60_000, "image/bmp"))], 413, "file_too_large"),
    ([("image", ("r.png", png(), "image/png"))], 422, "no_files"),
    ([("files", (f"{i}.png", png(), "image/png")) for i in range(5)], 413, "too_many_files"),
])
def test_bad_uploads_get_json_errors_and_the_server_goes_on(client, files, status, code):
    r = client.post("/predict", files=files)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["code"] == code
    if code not in ("no_files", "too_many_files"):
        assert files[0][1][0] in err["message"]  # the message names the file
    assert client.post("/predict", files=[("files", ("ok.png", png(), "image/png"))]).status_code == 200


def test_other_bad_requests(client):
    assert error_of(client.post("/predict", content=b"raw bytes"))["code"] == "not_multipart"
    assert error_of(client.post("/predict", files=[("files", ("a.png", png(), "image/png"))],
                                params={"top_k": 0}))["code"] == "invalid_request"
    assert error_of(client.post("/predict", files=[("files", ("a.png", png(), "image/png"))],
                                params={"top_k": "x"}))["code"] == "invalid_request"
    assert error_of(client.get("/nothing"))["code"] == "not_found"
    assert error_of(client.get("/predict"))["status"] == 405
    r = client.post("/explain", files=[("file", ("a.png", png(), "image/png")), ("file", ("b.png", png(), "image/png"))])
    assert error_of(r)["code"] == "one_file"
    assert client.get("/health").status_code == 200


def test_other_image_modes_are_converted(client):
    for mode in ("L", "RGBA", "P"):
        r = client.post("/predict", files=[("files", (f"{mode}.png", png(mode=mode), "image/png"))])
        assert r.status_code == 200, (mode, r.text)


def test_explain_returns_a_gradcam_overlay(client, trained):
    root = trained[1]
    r = client.post("/explain", files=[("file", ("g.png", (root / "test" / "green" / "001.png").read_bytes(), "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in ("blue", "green", "red") and body["overlay"].startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(body["overlay"].split(",", 1)[1])))
    assert im.format == "PNG" and min(im.size) >= 224


def test_api_key(trained):
    with TestClient(create_app(trained[0], api_key="s3cret")) as c:
        files = [("files", ("a.png", png(), "image/png"))]
        assert error_of(c.post("/predict", files=files))["code"] == "unauthorized"
        assert error_of(c.post("/predict", files=files, headers={"X-API-Key": "wrong"}))["status"] == 401
        assert error_of(c.get("/model"))["status"] == 401
        assert c.post("/predict", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/predict", files=files, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # health checks need no key


def test_concurrent_requests_are_batched(trained):
    app = create_app(trained[0], batch_window_ms=200, max_batch=64)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*[c.post("/predict", files=[("files", (f"{i}.png", png(), "image/png"))])
                                        for i in range(8)])
        return rs

    rs = asyncio.run(run())
    assert all(r.status_code == 200 for r in rs)
    assert app.state.batcher.calls < 8  # several requests shared a model call


def test_micro_batcher_reports_model_failures():
    def broken(images):
        raise RuntimeError("model exploded")

    b = MicroBatcher(broken, window=0.01)

    async def run():
        with pytest.raises(RuntimeError, match="exploded"):
            await b.submit([Image.new("RGB", (4, 4))])

    asyncio.run(run())


def test_chunked_uploads_eps_and_pixel_budget_are_refused(trained):
    from imgcls.errors import ImgclsError

    with TestClient(create_app(trained[0], limits=ServeLimits(max_request_pixels=300))) as c:
        def chunks():
            yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
            yield png()
            yield b"\r\n--x--\r\n"

        r = c.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 411 and error_of(r)["code"] == "length_required"
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # Pillow would hand this to Ghostscript
        r = c.post("/predict", files=[("files", ("x.png", eps, "image/png"))])
        assert error_of(r)["code"] == "not_an_image"
        two = [("files", (f"{i}.png", png(size=(12, 12)), "image/png")) for i in range(3)]  # 3 x 144 > 300 pixels
        r = c.post("/predict", files=two)
        assert r.status_code == 413 and "together" in error_of(r)["message"]
        assert c.post("/predict", files=two[:2]).status_code == 200
    with pytest.raises(ImgclsError, match="api_key is empty"):
        create_app(trained[0], api_key=" ")
