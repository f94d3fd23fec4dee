"""A real OpenAI-compatible (and Anthropic Messages) HTTP server on 127.0.0.1 for the API client's tests.

It answers deterministically (the answer depends on the request body only) and can misbehave on purpose:
429 with Retry-After, 500, a hang past the client's timeout, 401, 404, a body that is not JSON, or stalling
one request until the test releases it. It counts what it received and what it answered, per request body.
No tests in this module.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse


class FakeApi:
    """``behaviour(n, body) -> None | (status, headers, body text) | "hang" | "stall"`` picks a misbehaviour for the
    n-th request received (1-based); None answers normally."""

    def __init__(self, behaviour=None, answer=None, delay_s: float = 0.0):
        self.behaviour = behaviour or (lambda n, body: None)
        self.answer = answer or (lambda prompt: f"The answer is {int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10}.")
        self.delay_s = delay_s
        self.received = 0
        self.received_bodies: Counter = Counter()
        self.answered_bodies: Counter = Counter()
        self.auth_headers: list[str] = []
        self.in_flight = self.max_in_flight = 0  # requests being handled at once (the client's concurrency, seen here)
        self.release = threading.Event()
        self.abandon = threading.Event()
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self.app = self._build()
        self._server: uvicorn.Server | None = None

    @property
    def answered(self) -> int:
        return sum(self.answered_bodies.values())

    def _build(self) -> FastAPI:
        app = FastAPI()

        async def handle(request: Request, wire: str):
            raw = await request.body()
            body = json.loads(raw)
            key = hashlib.sha256(raw).hexdigest()
            with self._lock:
                self.received += 1
                n = self.received
                self.received_bodies[key] += 1
                self.auth_headers.append(request.headers.get("authorization") or request.headers.get("x-api-key") or "")
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await respond(n, body, key, wire)
            finally:
                with self._lock:
                    self.in_flight -= 1

        async def respond(n, body, key, wire):
            import anyio

            action = self.behaviour(n, body)
            if action == "hang":
                await anyio.sleep(30)
                return JSONResponse({"error": {"message": "too late"}}, status_code=504)
            if action == "stall":
                self.stalled.set()
                await anyio.to_thread.run_sync(self.release.wait)
                if self.abandon.is_set():  # its client is gone: not answered, as `workbench serve` cancels such a request
                    return JSONResponse({"error": {"message": "client went away"}}, status_code=499)
            elif action is not None:
                status, headers, text = action
                return PlainTextResponse(text, status_code=status, headers=headers)
            if self.delay_s:
                await anyio.sleep(self.delay_s)
            prompt = body.get("prompt") or body["messages"][-1]["content"]
            text = self.answer(prompt)
            n_in, n_out = max(1, len(prompt) // 4), max(1, len(text) // 4)
            with self._lock:
                self.answered_bodies[key] += 1
            if wire == "anthropic":
                return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                        "usage": {"input_tokens": n_in, "output_tokens": n_out}}
            choice = {"text": text} if "prompt" in body else {"message": {"role": "assistant", "content": text}}
            return {"choices": [{**choice, "index": 0, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await handle(request, "openai")

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await handle(request, "openai")

        @app.post("/v1/messages")
        async def messages(request: Request):
            return await handle(request, "anthropic")

        return app

    def start(self) -> str:
        """Serve on an ephemeral port in a thread; returns the OpenAI-style base_url (…/v1)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="error", lifespan="off"))
        threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.port = port
        return f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.should_exit = True


def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
