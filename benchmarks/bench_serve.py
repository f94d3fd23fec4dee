"""Requests per second against `workbench serve` at concurrency 1 and 8, and their ratio.

Starts `workbench serve --port 0` (the embedded model unless --model, optionally under --press/--rate) as a
subprocess, or targets a running server with --url, then sends short prompts (a one-line arithmetic question,
max_tokens 16, greedy) with plain httpx (async): --requests of them at each concurrency, after a warm-up.
Prints, per concurrency: requests, wall seconds, requests/s, completion tokens/s, mean and p50 latency; then the
ratio of requests/s at the highest concurrency to concurrency 1. The server generates for one request at a time
(one model, one worker thread, no batching), so the ratio says how much of a request is the server's overhead
that concurrency hides, not extra model throughput.

Usage: python benchmarks/bench_serve.py [--model smollm2-135m] [--device auto] [--requests 32]
       [--concurrency 1,8] [--max-tokens 16] [--press snapkv --rate 0.5] [--url http://127.0.0.1:8000/v1 --name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time

import httpx


def start_server(args) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "workbench", "serve", "--model", args.model, "--device", args.device, "--port", "0"]
    if args.press:
        command += ["--press", args.press] + (["--rate", str(args.rate)] if args.rate is not None else [])
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    for line in proc.stderr:
        match = re.match(r"^serving (\S+) at (\S+)$", line.strip())
        if match:
            return proc, match.group(1), match.group(2)
        sys.stderr.write(line)
    raise SystemExit(f"the server did not start (exit code {proc.wait()})")


def prompt(i: int) -> str:
    return f"Question: What is {i + 2} plus {3 * i + 1}?\nAnswer:"


async def run(url: str, name: str, n: int, concurrency: int, max_tokens: int, offset: int) -> dict:
    latencies: list[float] = []
    tokens = 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(offset + i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker():
            nonlocal tokens
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/completions", json={"model": name, "prompt": prompt(i), "max_tokens": max_tokens,
                                                                   "temperature": 0})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                tokens += response.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": n, "seconds": wall, "rps": n / wall, "tokens_per_s": tokens / wall,
            "mean_ms": 1000 * statistics.fmean(latencies), "p50_ms": 1000 * statistics.median(latencies)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--press")
    p.add_argument("--rate", type=float)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--url", help="a running server's base URL (ending in /v1) instead of starting one")
    p.add_argument("--name", help="the model name that server serves (with --url)")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    proc = None
    if args.url:
        url, name = args.url, args.name or httpx.get(args.url + "/models").json()["data"][0]["id"]
    else:
        proc, name, url = start_server(args)
    try:
        asyncio.run(run(url, name, 4, 1, args.max_tokens, 10_000))  # warm-up: first forward passes, connections
        rows = [asyncio.run(run(url, name, args.requests, c, args.max_tokens, 0)) for c in levels]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print(f"workbench serve: {name}, {args.requests} requests per level, max_tokens {args.max_tokens}, greedy"
          + (f", press {args.press} rate {args.rate}" if args.press else ""))
    print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>7} {'tok/s':>7} {'mean ms':>8} {'p50 ms':>7}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['requests']:>8} {r['seconds']:>8.2f} {r['rps']:>7.2f} {r['tokens_per_s']:>7.1f} "
              f"{r['mean_ms']:>8.1f} {r['p50_ms']:>7.1f}")
    print(f"ratio req/s at concurrency {levels[-1]} / {levels[0]}: {rows[-1]['rps'] / rows[0]['rps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
