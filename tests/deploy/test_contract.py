"""The server against its own OpenAPI contract: schemathesis with every check, and a client generated from it.

Both run against the real server (uvicorn on loopback). Schemathesis generates requests from
/openapi.json (tests/deploy/schemathesis_hooks.py makes the declared image parts real image files, or
broken ones) and checks every answer: status documented, body matching its schema, valid requests
accepted, invalid ones refused with a 4xx, the API key enforced, 405s with Allow, no 5xx.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgcls.deploy.serve import ServeLimits, create_app
from imgcls.predict import Predictor
from tests.deploy.conftest import live_server

ROOT = Path(__file__).resolve().parents[2]
KEY = "s3cret-key"


def schemathesis(url: str, tmp_path: Path, images: str, *extra: str, config: str = "") -> subprocess.CompletedProcess:
    """`schemathesis run URL/openapi.json --checks all` with this suite's image hooks; returns the finished process."""
    exe = Path(sys.executable).with_name("schemathesis")
    cfg = tmp_path / f"schemathesis-{images}.toml"
    cfg.write_text(config)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.deploy.schemathesis_hooks", "IMGCLS_ST_IMAGES": images,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "NO_COLOR": "1"}
    cmd = [str(exe), "--config-file", str(cfg), "run", f"{url}openapi.json", "--checks", "all", "--max-examples", "80",
           "--seed", "1", "--workers", "1", "--request-timeout", "30", "--report", "junit",
           "--report-junit-path", str(tmp_path / f"junit-{images}.xml"), *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)


def cases(out: str) -> int:
    """The number of test cases schemathesis says it generated."""
    found = re.search(r"^\s*(\d+) generated", out, re.MULTILINE)
    assert found, out[-3000:]
    return int(found.group(1))


def test_schemathesis_finds_nothing_with_real_images_and_a_key(trained, tmp_path):
    """Schema-valid requests carry real images of every declared type: each must be answered 200 with a body
    matching the schema; requests without the key 401; invalid ones a documented 4xx."""
    app = create_app(trained[0], api_key=KEY, limits=ServeLimits(max_files=4))
    with live_server(app) as url:
        p = schemathesis(url, tmp_path, "real", "-H", f"X-API-Key: {KEY}")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert cases(out) >= 200, out[-3000:]
    assert app.state.batcher.calls >= 50, "schemathesis' images did not reach the model"  # past the contract


def test_schemathesis_finds_nothing_with_broken_images(trained, tmp_path):
    """Broken files (random bytes, empty, mutated real images) are schema-valid too (the schema cannot say
    'decodable'): they must get one of the documented refusals (400, 413, 415), never a 5xx."""
    app = create_app(trained[0])
    config = '[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "400", "413", "415"]\n'
    with live_server(app) as url:
        p = schemathesis(url, tmp_path, "broken", config=config)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert cases(out) >= 100, out[-3000:]


def test_a_generated_client_uploads_an_image(trained, tmp_path):
    """openapi-python-client generates a client from /openapi.json; it uploads a real PNG and reads the answer."""
    ckpt, root, _ = trained
    image = root / "test" / "red" / "000.png"
    expected = Predictor.load(ckpt, device="cpu").predict(str(image), top_k=2)
    with live_server(create_app(ckpt)) as url:
        spec = tmp_path / "openapi.json"
        spec.write_bytes(urllib.request.urlopen(f"{url}openapi.json", timeout=30).read())
        config = tmp_path / "generator.yaml"
        config.write_text("package_name_override: imgcls_client\npost_hooks: []\n")
        gen = subprocess.run([str(Path(sys.executable).with_name("openapi-python-client")), "generate", "--path", str(spec),
                              "--output-path", str(tmp_path / "imgcls_client"), "--config", str(config), "--meta", "none"],
                             capture_output=True, text=True, timeout=120)
        assert gen.returncode == 0, gen.stdout + gen.stderr
        code = f"""
import io, json, sys
from imgcls_client import Client
from imgcls_client.api.default import health, model_info, predict
from imgcls_client.models import BodyPredict, ErrorBody, PredictAnswer
from imgcls_client.types import File
c = Client(base_url={url!r}, raise_on_unexpected_status=True)
png = open({str(image)!r}, "rb").read()
ok = predict.sync(client=c, body=BodyPredict(files=[File(payload=io.BytesIO(png), file_name="red.png",
                                                         mime_type="image/png")]), top_k=2)
assert isinstance(ok, PredictAnswer), ok
bad = predict.sync(client=c, body=BodyPredict(files=[File(payload=io.BytesIO(b"text"), file_name="x.png")]))
assert isinstance(bad, ErrorBody), bad
p = ok.predictions[0]
print(json.dumps({{"health": health.sync(client=c).status, "classes": model_info.sync(client=c).classes,
                  "filename": p.filename, "label": p.label, "score": p.score, "top_k": [t.label for t in p.top_k],
                  "error": bad.error.code}}))
"""
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["health"] == "ok" and got["classes"] == ["blue", "green", "red"]
    assert got["filename"] == "red.png" and got["label"] == expected["label"]
    assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert got["top_k"] == [t["label"] for t in expected["top_k"]]
    assert got["error"] == "not_an_image"


def test_the_contract_declares_bodies_ranges_and_errors(trained):
    """What a reader of /openapi.json sees, checked directly (the fuzzing above checks it is kept)."""
    with TestClient(create_app(trained[0], api_key=KEY)) as c:
        doc = c.get("/openapi.json").json()
        r = c.request("TRACE", "/predict")
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"POST"}
    for path, field in (("/predict", "files"), ("/explain", "file")):
        op = doc["paths"][path]["post"]
        body = op["requestBody"]["content"]["multipart/form-data"]
        assert "image/png" in body["encoding"][field]["contentType"]
        ref = body["schema"]["$ref"].rsplit("/", 1)[1]
        prop = doc["components"]["schemas"][ref]["properties"][field]
        assert (prop.get("items") or prop)["format"] == "binary"
        assert {"400", "401", "411", "413", "415", "422", "500", "503"} <= set(op["responses"])
        for status, answer in op["responses"].items():
            if status != "200":
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (path, status)
        top_k = next(q for q in op["parameters"] if q["name"] == "top_k")["schema"]
        assert top_k["minimum"] == 1 and top_k["maximum"] == 100
        assert op["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert "501" in doc["paths"]["/explain"]["post"]["responses"]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_a_file_part_without_a_filename_is_still_a_file(trained):
    """RFC 7578 only recommends a filename: a part of the upload field without one is a file, not text."""
    png = io.BytesIO()
    Image.new("RGB", (9, 7), (200, 30, 30)).save(png, format="PNG")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"\r\nContent-Type: image/png\r\n\r\n" + png.getvalue()
            + b"\r\n--b--\r\n")
    with TestClient(create_app(trained[0])) as c:
        r = c.post("/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["filename"] == "file 1"
