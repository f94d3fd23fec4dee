"""API client overhead: the workbench's client against a bare httpx call, on a local server answering in 50 ms.

Prints, per path, the mean time a request takes at concurrency 1 and the client's own overhead per request
(ours − bare httpx), with the target: overhead < 5% of a 50 ms request (2.5 ms). "ours" is the full path a
run takes — request body, the response cache looked up and written (SQLite, committed per answer), retry
wrapper, budget reservation, usage and cost — minus nothing.

Usage: python benchmarks/bench_api_client.py [--requests 100] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# tests/api_server.py: the same local server the tests use (imported by its own name: a dependency ships a
# top-level package called `tests`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402

from api_server import FakeApi  # noqa: E402
from workbench.api.cache import ResponseCache  # noqa: E402
from workbench.api.client import ApiClient, Request  # noqa: E402
from workbench.api.evaluator import parse_evaluator  # noqa: E402
from workbench.api.prices import Price  # noqa: E402


def bare(url: str, n: int, tag: str) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            body = {"model": "m", "max_tokens": 8, "temperature": 0.0,
                    "messages": [{"role": "user", "content": f"{tag} question {i}?"}]}
            start = time.perf_counter()
            data = client.post("/chat/completions", json=body).json()
            data["choices"][0]["message"]["content"]
            times.append(time.perf_counter() - start)
    return times


def ours(url: str, n: int, tag: str, cache: ResponseCache | None) -> list[float]:
    spec = parse_evaluator({"provider": "openai-compatible", "model": "m", "base_url": url, "max_concurrency": 1})
    client = ApiClient(spec, "sk-bench", Price(0.15, 0.6, "bench"), cache, max_cost_usd=1000.0)
    times = []
    try:
        for i in range(n):  # one request per call: the per-request cost of the whole path
            start = time.perf_counter()
            client.answer_many([Request(f"{tag} question {i}?", 8, 6)])
            times.append(time.perf_counter() - start)
    finally:
        client.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    server = FakeApi(delay_s=args.latency_ms / 1000)
    url = server.start()
    bare(url, 5, "warm-up")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite3")
        runs = {"bare httpx": bare(url, args.requests, "bare"),
                "workbench client, no cache": ours(url, args.requests, "nocache", None),
                "workbench client + cache": ours(url, args.requests, "cache", cache),
                "answered from the cache": ours(url, args.requests, "cache", cache)}
    base = statistics.mean(runs["bare httpx"])
    print(f"{args.requests} requests at concurrency 1, server latency {args.latency_ms:g} ms\n")
    print(f"{'path':30s} {'mean ms':>8s} {'median ms':>10s} {'overhead ms':>12s} {'% of latency':>13s}")
    for name, times in runs.items():
        mean = statistics.mean(times)
        over = (mean - base) * 1000 if name != "bare httpx" else 0.0
        rows.append((name, mean, over))
        print(f"{name:30s} {mean * 1000:8.2f} {statistics.median(times) * 1000:10.2f} {over:12.2f} "
              f"{100 * over / args.latency_ms:12.1f}%")
    worst = max(over for name, _, over in rows if name.startswith("workbench"))
    print(f"\nclient overhead (worst sending path): {worst:.2f} ms per request = {100 * worst / args.latency_ms:.1f}% of "
          f"{args.latency_ms:g} ms (target < 5%): {'met' if worst < 0.05 * args.latency_ms else 'NOT met'}")
    server.stop()


if __name__ == "__main__":
    main()
