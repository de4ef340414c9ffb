"""Load check of `imgcls serve`: N concurrent clients on loopback, each posting real test images.

    python benchmarks/serve_load.py --ckpt runs/bench/cifar10_cpu10-seed0/best.safetensors --clients 200

Starts `imgcls serve` in its own process, waits for /health, then runs `--clients` concurrent clients
(one connection each) that post `--requests` single-image /predict requests back to back, each a
different CIFAR-10 test PNG. Reports errors (anything but HTTP 200 with a label), latency p50/p95/p99
and requests/s into benchmarks/results/serve_load.json and docs/deploy.md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name  # noqa: E402
from benchmarks.doc_tables import replace_between_markers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serve_load.json"
DOC = ROOT / "docs" / "deploy.md"
MARK = "<!-- load-table -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(http, url: str, images: list[bytes], start: int, n: int, lat: list, errors: list) -> None:
    for i in range(n):
        data = images[(start + i) % len(images)]
        t = time.perf_counter()
        try:
            r = await http.post(url, files=[("files", (f"{start}-{i}.png", data, "image/png"))])
            ok = r.status_code == 200 and r.json()["predictions"][0]["label"]
            if not ok:
                errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
        except Exception as e:  # a refused or dropped connection is an error too
            errors.append(f"{type(e).__name__}: {e}")
        lat.append(time.perf_counter() - t)


async def load(url: str, images: list[bytes], clients: int, requests: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(http, url, images, c * requests, requests, lat, errors) for c in range(clients)])
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "error_examples": errors[:5],
            "seconds": round(wall, 2), "requests_per_second": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", default=os.environ.get("IMGCLS_DATA", "data"), help="data root with cifar10/test")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=10, help="requests per client")
    args = ap.parse_args()
    files = sorted((Path(args.data) / "cifar10" / "test").rglob("*.png"))[:2000]
    if not files:
        raise SystemExit(f"no PNGs under {Path(args.data) / 'cifar10' / 'test'}")
    images = [f.read_bytes() for f in files]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", f"ckpt={args.ckpt}", f"port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read() if server.poll() is not None else ''}")
            time.sleep(0.5)
        res = asyncio.run(load(f"http://127.0.0.1:{port}/predict", images, args.clients, args.requests))
        calls = httpx.get(f"http://127.0.0.1:{port}/health").json()["model_calls"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    res.update(model_calls=calls, images_per_model_call=round(res["requests"] / max(calls, 1), 1),
               ckpt=str(args.ckpt), hardware=f"{cpu_name()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    table = ("| clients | requests | errors | requests/s | p50 ms | p95 ms | p99 ms | max ms | images per model call |\n"
             "|---|---|---|---|---|---|---|---|---|\n"
             f"| {res['clients']} | {res['requests']} | {res['errors']} | {res['requests_per_second']} | {res['p50_ms']} | "
             f"{res['p95_ms']} | {res['p99_ms']} | {res['max_ms']} | {res['images_per_model_call']} |\n\n"
             f"{res['hardware']}, server and clients on the same machine, {res['date']}.")
    replace_between_markers(DOC, MARK, table)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
