"""A long fuzzing campaign against the Predictor and POST /predict (the tests run the same with fewer inputs).

    python benchmarks/fuzz.py --ckpt MODEL_FILE --examples 3000

Inputs: random bytes, real PNG/JPEG/GIF/BMP files with bytes flipped, inserted, deleted or cut, and valid
images of extreme shapes and modes (tests/deploy/strategies.py). Every input must give a prediction
or a clean error (ImgclsError, JSON 4xx) within 10 s; peak memory is recorded. Writes
benchmarks/results/fuzz.json and the table in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name  # noqa: E402
from benchmarks.doc_tables import replace_between_markers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
DOC = ROOT / "docs" / "reliability.md"
MARK = "<!-- fuzz-table -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--examples", type=int, default=3000, help="inputs per target")
    args = ap.parse_args()
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings

    from imgcls.deploy.serve import create_app
    from imgcls.errors import ImgclsError
    from imgcls.predict import Predictor
    from tests.deploy.strategies import hostile_bytes

    cfg = settings(max_examples=args.examples, deadline=10_000, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
    predictor = Predictor.load(args.ckpt, device="cpu")
    out: dict = {"ckpt": args.ckpt, "hardware": f"{cpu_name()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        outcomes: Counter = Counter()

        @cfg
        @given(data=hostile_bytes)
        def fuzz_predictor(data: bytes) -> None:
            path = Path(tmp) / "x.img"
            path.write_bytes(data)
            try:
                predictor.predict(str(path))
                outcomes["prediction"] += 1
            except ImgclsError:
                outcomes["clean error"] += 1

        t0 = time.perf_counter()
        fuzz_predictor()
        out["predictor"] = {"inputs": sum(outcomes.values()), **outcomes, "seconds": round(time.perf_counter() - t0, 1)}
    statuses: Counter = Counter()
    with TestClient(create_app(args.ckpt)) as client:
        @cfg
        @given(data=hostile_bytes)
        def fuzz_server(data: bytes) -> None:
            r = client.post("/predict", files=[("files", ("f.png", data, "image/png"))])
            statuses[r.status_code] += 1
            assert r.status_code == 200 or 400 <= r.status_code < 500, r.text

        t0 = time.perf_counter()
        fuzz_server()
        out["server"] = {"inputs": sum(statuses.values()), "status": {str(k): v for k, v in sorted(statuses.items())},
                         "seconds": round(time.perf_counter() - t0, 1), "still_healthy": client.get("/health").status_code == 200}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    p, s = out["predictor"], out["server"]
    table = ("| target | inputs | outcome | seconds |\n|---|---|---|---|\n"
             f"| Predictor.predict (file) | {p['inputs']} | {p.get('prediction', 0)} predictions, "
             f"{p.get('clean error', 0)} ImgclsErrors, 0 crashes | {p['seconds']} |\n"
             f"| POST /predict | {s['inputs']} | HTTP " + ", ".join(f"{k}: {v}" for k, v in s["status"].items())
             + f"; no 5xx; healthy after: {s['still_healthy']} | {s['seconds']} |\n\n"
             f"Peak memory of the fuzzing process: {out['peak_rss_mb']} MB. {out['hardware']}, {out['date']}; "
             f"`python benchmarks/fuzz.py --ckpt MODEL_FILE --examples {args.examples}`.")
    replace_between_markers(DOC, MARK, table)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
