"""Fuzzing: the Predictor and POST /predict under random bytes, mutated real images and extreme sizes.

Every input must give a prediction or a clean error (ImgclsError / a JSON 4xx), within the deadline,
and memory must stay bounded. benchmarks/fuzz.py runs the same strategies with many more inputs.
"""

from __future__ import annotations

import resource

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from imgcls.deploy.serve import create_app
from imgcls.errors import ImgclsError
from imgcls.predict import Predictor
from tests.deploy.strategies import hostile_bytes

FUZZ = settings(max_examples=50, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow], derandomize=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor.load(trained[0], device="cpu")


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(create_app(trained[0])) as c:
        yield c


def test_predictor_survives_hostile_files(predictor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    before = rss_mb()
    seen = []

    @FUZZ
    @given(data=hostile_bytes)
    def check(data: bytes):
        path = folder / f"x{len(seen)}.png"
        path.write_bytes(data)
        seen.append(1)
        try:
            r = predictor.predict(str(path))
            assert r["label"] in predictor.classes and 0 <= r["score"] <= 1
        except ImgclsError as e:
            assert str(path) in str(e)  # the error names the file
        finally:
            path.unlink()

    check()
    assert len(seen) >= 40
    assert rss_mb() - before < 800  # bounded: no image decoded past the pixel limit


def test_predict_endpoint_survives_hostile_uploads(client):
    seen = []

    @FUZZ
    @given(data=hostile_bytes)
    def check(data: bytes):
        seen.append(1)
        r = client.post("/predict", files=[("files", ("f.png", data, "image/png"))])
        assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
        body = r.json()
        assert ("predictions" in body) if r.status_code == 200 else body["error"]["status"] == r.status_code

    check()
    assert len(seen) >= 40
    assert client.get("/health").json()["status"] == "ok"
