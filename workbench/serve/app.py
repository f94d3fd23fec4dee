"""The HTTP face of ``workbench serve``: an OpenAI-compatible FastAPI app over an :class:`~workbench.serve.engine.Engine`.

Endpoints: ``GET /v1/models``; ``POST /v1/completions`` and ``POST /v1/chat/completions``, streamed (server-sent
events) or not, with ``usage``; ``GET /workbench/stats`` (requests completed per endpoint, tokens: what the
server really did, for tests and for users who count); ``GET /health``. Errors use OpenAI's JSON shape.

Generation runs on one worker thread (the model is one; ``Engine.complete`` also holds a lock), so the event loop
keeps answering /health, /v1/models and /workbench/stats while a request generates. A streaming client that goes
away cancels its generation at the next token, and so does one waiting for a whole answer (checked every 0.25 s); a
queued request whose client left never starts.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from workbench.secrets import scrub_paragraph
from workbench.serve.engine import Cancelled, Engine, Sampling
from workbench.serve.schema import ApiError, ChatRequest, CompletionRequest, validation_error

DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there
CHAT_DEFAULT_MAX_TOKENS = 256  # chat requests without max_tokens: a bound, so one request cannot hold the model for long


class Stats:
    """What the server has done: requests completed, failed and cancelled (a streaming client that left) per endpoint,
    tokens in and out of the completed ones, requests in flight."""

    def __init__(self):
        self.completed: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0

    def done(self, endpoint: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.completed[endpoint] = self.completed.get(endpoint, 0) + 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def fail(self, endpoint: str) -> None:
        self.failed[endpoint] = self.failed.get(endpoint, 0) + 1

    def cancel(self, endpoint: str) -> None:
        self.cancelled[endpoint] = self.cancelled.get(endpoint, 0) + 1

    def as_dict(self) -> dict:
        return {"completed": dict(self.completed), "failed": dict(self.failed), "cancelled": dict(self.cancelled),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "in_flight": self.in_flight}


def build_app(engine: Engine, name: str, token: str | None = None, info: dict | None = None) -> FastAPI:
    """The app serving ``engine`` as the model ``name``. With ``token``, every endpoint but /health wants
    ``Authorization: Bearer <token>``. ``info`` is shown under "workbench" in /v1/models (press, rate)."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-serve")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="workbench serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    stats = Stats()
    app.state.stats, app.state.engine, app.state.worker = stats, engine, worker
    created = int(time.time())
    extra = {"workbench": info} if info else {}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        if request.url.path.startswith("/v1/") and err.status != 401:
            stats.fail(request.url.path)
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        return await _api_error(request, _server_error(err))

    def check_model(model: str) -> None:
        if model != name:
            raise ApiError(404, f"model '{model}' is not served here; this server serves '{name}'", param="model",
                           code="model_not_found")

    if token is not None:
        app.add_middleware(_BearerAuth, token=token)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "workbench", **extra}]}

    @app.get("/workbench/stats")
    async def get_stats():
        return stats.as_dict()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request, CompletionRequest)
        check_model(body.model)
        prompt = body.prompt
        if isinstance(prompt, str):
            ids = await _on_worker(engine.text_ids, prompt)
            if not ids:
                raise ApiError(400, "prompt: the prompt has no tokens", param="prompt")
        else:
            ids = list(prompt)
            if any(i < 0 or i >= engine.vocab_size for i in ids):
                raise ApiError(400, f"prompt: token ids must lie in [0, {engine.vocab_size})", param="prompt")
        return await _respond(request, body, ids, body.max_tokens, "/v1/completions", _TextShape(name))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request, ChatRequest)
        check_model(body.model)
        try:
            ids = await _on_worker(engine.chat_ids, [m.as_dict() for m in body.messages])
        except Exception as err:  # noqa: BLE001 — templates raise what they like (jinja's TemplateError for a role order)
            raise ApiError(400, scrub_paragraph(f"messages: the model's chat template refused them: {err}")[:500],
                           param="messages") from None
        if not ids:
            raise ApiError(400, "messages: the conversation has no tokens", param="messages")
        return await _respond(request, body, ids, body.budget(CHAT_DEFAULT_MAX_TOKENS), "/v1/chat/completions", _ChatShape(name))

    async def _on_worker(fn, *args):
        # Tokenizing on the worker thread too: the tokenizer is then used by one thread only (streaming decodes there),
        # and a long prompt does not hold up the event loop.
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    async def _respond(request: Request, body, ids: list[int], max_tokens: int, endpoint: str, shape):
        sampling = Sampling(max_tokens=max_tokens, temperature=float(body.temperature), seed=body.seed, stop=body.stop_strings())
        loop = asyncio.get_running_loop()
        if not body.stream:
            stats.in_flight += 1
            cancelled = threading.Event()
            future = loop.run_in_executor(worker, functools.partial(engine.complete, ids, sampling, cancelled=cancelled))
            try:
                # A client that gives up (its timeout, then maybe a retry) must not leave the model busy with an answer
                # nobody reads: look for a disconnect while waiting, and stop the generation at its next token.
                while not (await asyncio.wait({future}, timeout=DISCONNECT_POLL_S))[0]:
                    if await request.is_disconnected():
                        cancelled.set()
                done = await future
            except Cancelled:
                stats.cancel(endpoint)
                return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
            except Exception as err:  # noqa: BLE001 — a generation error is the client's 500, the server goes on
                raise _server_error(err) from None
            finally:
                stats.in_flight -= 1
            stats.done(endpoint, done.prompt_tokens, done.completion_tokens)
            return shape.whole(done)
        return StreamingResponse(_stream(body, ids, sampling, endpoint, shape, loop), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(body, ids, sampling, endpoint, shape, loop):
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))

        def work():
            try:
                result = engine.complete(ids, sampling, on_text=on_text, cancelled=cancelled)
                loop.call_soon_threadsafe(queue.put_nowait, ("done", result))
            except Cancelled:
                loop.call_soon_threadsafe(queue.put_nowait, ("cancelled", None))
            except Exception as err:  # noqa: BLE001 — reported in the stream; the server goes on
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err))

        stats.in_flight += 1
        future = loop.run_in_executor(worker, work)
        finished = False
        try:
            yield _sse(shape.first())
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield _sse(shape.piece(value))
                elif kind == "done":  # generated: counted as completed even if the client leaves during the last chunks
                    stats.done(endpoint, value.prompt_tokens, value.completion_tokens)
                    finished = True
                    yield _sse(shape.last(value))
                    if body.include_usage():
                        yield _sse(shape.usage_only(value))
                    yield "data: [DONE]\n\n"
                    return
                elif kind == "error":
                    stats.fail(endpoint)
                    finished = True
                    yield _sse(_server_error(value).body())
                    yield "data: [DONE]\n\n"
                    return
                else:
                    return
        finally:
            if not finished:
                stats.cancel(endpoint)
            cancelled.set()  # the client left (or the stream ended): a running generation stops at its next token
            stats.in_flight -= 1
            future.add_done_callback(lambda f: f.exception())  # its errors went into the stream already

    return app


class _BearerAuth:
    """Every path but /health wants ``Authorization: Bearer <token>``; else 401 in OpenAI's shape. (Plain ASGI, not
    Starlette's BaseHTTPMiddleware, which wraps every streamed response in a second stream.)"""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token):
            return await self.app(scope, receive, send)
        err = ApiError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token this "
                            "server was started with", kind="authentication_error", code="invalid_api_key")
        await JSONResponse(err.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


async def _body(request: Request, model):
    """The request's JSON body as ``model``, whatever its content type says (clients differ); else a 400 naming the field."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "body: the request body is not valid JSON", param="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: the request body must be a JSON object", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err.errors()) from None


def _server_error(err: Exception) -> ApiError:
    if isinstance(err, ApiError):
        return err
    message = scrub_paragraph(f"generation failed: {type(err).__name__}: {err}")[:1000]
    return ApiError(500, message, kind="server_error")


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


class _Shape:
    """The JSON of one endpoint's answers: whole, and as stream chunks."""

    kind = ""

    def __init__(self, name: str):
        self.name, self.id, self.created = name, f"{self.prefix}-{uuid.uuid4().hex}", int(time.time())

    def _base(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.name}

    def _workbench(self, done) -> dict:
        return {"workbench": {"kept_fraction": done.kept_fraction}}

    def usage_only(self, done) -> dict:
        return {**self._base(self.chunk_object), "choices": [], "usage": _usage(done)}


class _TextShape(_Shape):
    prefix, chunk_object = "cmpl", "text_completion"

    def whole(self, done) -> dict:
        choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}
        return {**self._base("text_completion"), "choices": [choice], "usage": _usage(done), **self._workbench(done)}

    def first(self) -> dict:
        return self.piece("")

    def piece(self, text: str) -> dict:
        return {**self._base("text_completion"), "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}

    def last(self, done) -> dict:
        choice = {"index": 0, "text": "", "finish_reason": done.finish_reason, "logprobs": None}
        return {**self._base("text_completion"), "choices": [choice], **self._workbench(done)}


class _ChatShape(_Shape):
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def whole(self, done) -> dict:
        message = {"role": "assistant", "content": done.text}
        choice = {"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": None}
        return {**self._base("chat.completion"), "choices": [choice], "usage": _usage(done), **self._workbench(done)}

    def _chunk(self, delta: dict, finish_reason=None) -> dict:
        return {**self._base("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    def first(self) -> dict:
        return self._chunk({"role": "assistant", "content": ""})

    def piece(self, text: str) -> dict:
        return self._chunk({"content": text})

    def last(self, done) -> dict:
        return {**self._chunk({}, done.finish_reason), **self._workbench(done)}


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on (host, port); port 0 picks a free one. Raises OSError."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGINT/SIGTERM (uvicorn's own handling)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
