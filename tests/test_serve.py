"""`workbench serve` mechanics on a tiny random-weight Llama, over real HTTP on ephemeral 127.0.0.1 ports:
endpoints, streaming equal to non-streaming, usage equal to the token counts, the stats counter, OpenAI-shaped
400/401/404/500 bodies, a responsive event loop and a client leaving mid-stream, the token never printed, and
bad flags refused with one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serve_server import ServerProcess, serve_in_thread

TOKEN = "tok-" + "7f3a9c" * 6  # a fake bearer token: it must never show up in the server's output
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "the cat sat on the mat and the dog ran fast in the house"


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    srv = ServerProcess(["--model", str(tiny_llama_dir), "--name", "tiny", "--auth-env", "SERVE_TEST_TOKEN", "--device", "cpu"],
                        env={"SERVE_TEST_TOKEN": TOKEN})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def _stats(client) -> dict:
    return client.get(str(client.base_url).rstrip("/").removesuffix("/v1") + "/workbench/stats").json()


def _stream(client, path: str, body: dict) -> tuple[list[dict], bool]:
    """The stream's JSON chunks and whether it ended with [DONE]."""
    chunks, done = [], False
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
            else:
                chunks.append(json.loads(line[len("data: "):]))
    return chunks, done


def test_the_startup_line_and_the_models_endpoint(server, client):
    assert server.name == "tiny"
    assert client.get("/models").json()["data"][0]["id"] == "tiny"
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}  # no token needed


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_requests_without_the_right_token_get_401(server, headers):
    stats = server.url.removesuffix("/v1") + "/workbench/stats"
    for method, url in [("GET", server.url + "/models"), ("POST", server.url + "/completions"), ("GET", stats)]:
        response = httpx.request(method, url, headers=headers, json={"model": "tiny", "prompt": "the"})
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        assert "Bearer" in error["message"] and TOKEN not in response.text


@pytest.mark.parametrize("path,body", [
    ("/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 12, "temperature": 0.9, "seed": 5}),
    ("/chat/completions", {"model": "tiny", "messages": [{"role": "system", "content": "the cat"}, {"role": "user", "content": PROMPT}],
                           "max_tokens": 12, "temperature": 0.9, "seed": 5}),
])
def test_streaming_and_whole_answers_agree_and_usage_counts_the_tokens(client, tokenizer, path, body):
    whole = client.post(path, json=body).json()
    chunks, done = _stream(client, path, {**body, "stream_options": {"include_usage": True}})
    assert done
    chat = path == "/chat/completions"
    text = whole["choices"][0]["message"]["content"] if chat else whole["choices"][0]["text"]
    pieces = [c["choices"][0]["delta"].get("content", "") if chat else c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert text and "".join(pieces) == text
    # the same seed samples the same tokens; a different one (almost surely) other ones
    assert client.post(path, json=body).json()["choices"][0] == whole["choices"][0]
    assert [c["usage"] for c in chunks if "usage" in c] == [whole["usage"]]  # one usage chunk, the last
    assert chunks[-1]["choices"] == []
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    reason = whole["choices"][0]["finish_reason"]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == reason
    prompt = PROMPT if not chat else "the cat\n\n" + PROMPT  # no chat template: the contents joined
    usage = whole["usage"]
    assert usage["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # 'stop': the end-of-sequence token came first (random weights draw it now and then); it is not counted
    assert usage["completion_tokens"] == body["max_tokens"] if reason == "length" else usage["completion_tokens"] < body["max_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert whole["workbench"]["kept_fraction"] == 1.0 and finals[0]["workbench"] == whole["workbench"]


def test_token_id_prompts_and_stop_strings(client, tokenizer):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "temperature": 1.0, "seed": 11}
    free = client.post("/completions", json=body).json()["choices"][0]["text"]
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert client.post("/completions", json={**body, "prompt": ids}).json()["choices"][0]["text"] == free
    words = free.split()
    assert len(words) >= 4, free
    stop = " " + words[2]  # cut before the third word's first occurrence
    expected = free[: free.index(stop)]
    cut = client.post("/completions", json={**body, "stop": [stop, "never-there"]}).json()
    assert cut["choices"][0]["text"] == expected and cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < body["max_tokens"]
    chunks, _ = _stream(client, "/completions", {**body, "stop": stop})
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == expected


def test_stats_count_every_completed_request_once(server, client):
    before = _stats(client)
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3, "temperature": 0}
    whole = client.post("/completions", json=body).json()
    _stream(client, "/completions", body)
    client.post("/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3})
    client.post("/completions", json={**body, "model": "other"})  # refused: counted as failed, not completed
    after = _stats(client)
    done = {k: after["completed"].get(k, 0) - before["completed"].get(k, 0) for k in after["completed"]}
    assert done == {"/v1/completions": 2, "/v1/chat/completions": 1}
    assert after["failed"]["/v1/completions"] - before["failed"].get("/v1/completions", 0) == 1
    assert after["prompt_tokens"] - before["prompt_tokens"] == 3 * whole["usage"]["prompt_tokens"]
    assert after["in_flight"] == 0


@pytest.mark.parametrize("path,body,param,words", [
    ("/completions", {"model": "tiny", "prompt": "the", "n": 2}, "n", "n = 1"),
    ("/completions", {"model": "tiny", "prompt": "the", "max_tokens": "3"}, "max_tokens", "integer"),
    ("/completions", {"model": "tiny", "prompt": "the", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ("/completions", {"model": "tiny", "prompt": "the", "temperature": 2.5}, "temperature", "2"),
    ("/completions", {"model": "tiny", "prompt": ["the", "cat"]}, "prompt", "one prompt per request"),
    ("/completions", {"model": "tiny", "prompt": [1, 2, 999]}, "prompt", "[0, 128)"),
    ("/completions", {"model": "tiny"}, "prompt", "required"),
    ("/completions", {"model": "tiny", "prompt": "the", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("/completions", {"model": "tiny", "prompt": "the", "top_p": 0.5}, "top_p", "top_p"),
    ("/chat/completions", {"model": "tiny", "messages": [{"role": "user"}]}, "messages.0.content", "required"),
    ("/chat/completions", {"model": "tiny", "messages": []}, "messages", "at least 1"),
    ("/completions", "{\"model\": ", "body", "not valid JSON"),
    ("/completions", "[1, 2]", "body", "JSON object"),
])
def test_bad_bodies_get_400_naming_the_field(client, path, body, param, words):
    response = client.post(path, content=body if isinstance(body, str) else json.dumps(body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ") and words in error["message"]


def test_unknown_model_gets_404(client):
    response = client.post("/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    assert response.json()["error"] == {"message": "model 'gpt-4o' is not served here; this server serves 'tiny'",
                                        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench.models import load_model

    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def test_the_server_answers_while_generating_and_survives_a_client_leaving(tiny_lm):
    from workbench.serve.app import build_app
    from workbench.serve.engine import Engine

    engine = Engine(tiny_lm)
    engine.stop_ids = set()  # no end-of-sequence token: only max_tokens or the client leaving ends a generation
    long = {"model": "tiny", "prompt": PROMPT, "max_tokens": 200_000, "temperature": 1.0, "seed": 3, "stream": True}
    with serve_in_thread(build_app(engine, "tiny")) as url, httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/completions", json=long) as response:
            lines = response.iter_lines()  # kept: dropping the iterator would close the stream
            received = [next(lines) for _ in range(12)]
            assert sum(line.startswith("data: {") for line in received) == 6, received
            started = time.monotonic()
            stats = _stats(client)  # the event loop answers while the model generates
            assert client.get("/models").status_code == 200
            assert stats["in_flight"] == 1 and time.monotonic() - started < 2, stats
            assert next(lines).startswith("data: {")  # still streaming
        # The client left after a few chunks: its generation stops at the next token (200k tokens take minutes), so
        # the next request gets the model at once.
        quick = client.post("/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2}, timeout=30)
        assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] == 2
        stats = _stats(client)
        assert stats["in_flight"] == 0 and stats["completed"] == {"/v1/completions": 1}
        assert stats["cancelled"] == {"/v1/completions": 1} and stats["failed"] == {}
        # Not streamed: a client that times out (and would retry) leaves too, and so does its generation.
        with pytest.raises(httpx.ReadTimeout):
            client.post("/completions", json={**long, "stream": False}, timeout=1.5)
        quick = client.post("/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2}, timeout=30)
        assert quick.status_code == 200
        stats = _stats(client)
        assert stats["cancelled"] == {"/v1/completions": 2} and stats["completed"] == {"/v1/completions": 2}


def test_a_generation_error_is_a_500_and_the_server_goes_on(tiny_lm):
    """A press kvpress refuses on this prompt (SnapKV's window is longer than the prompt): 500 with the reason."""
    from workbench.methods import registry
    from workbench.plan import MethodSpec
    from workbench.serve.app import build_app
    from workbench.serve.engine import Engine

    lm = tiny_lm
    params = registry.resolve_params(registry.lookup("snapkv"), {"window_size": 16})
    app = build_app(Engine(lm, MethodSpec(name="snapkv", params=params, rates=[0.5]), 0.5), "tiny-snapkv")
    long_prompt = " ".join([PROMPT] * 3)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        short = c.post("/completions", json={"model": "tiny-snapkv", "prompt": "the cat sat", "max_tokens": 4})
        assert short.status_code == 500
        error = short.json()["error"]
        assert error["type"] == "server_error" and "window size 16" in error["message"]
        chunks, done = _stream(c, "/completions", {"model": "tiny-snapkv", "prompt": "the cat sat", "max_tokens": 4})
        assert done and chunks[-1]["error"]["type"] == "server_error"
        ok = c.post("/completions", json={"model": "tiny-snapkv", "prompt": long_prompt, "max_tokens": 4}).json()
        n = len(lm.tokenizer(long_prompt, add_special_tokens=False)["input_ids"]) - 1  # the prefill: all but the last
        assert ok["workbench"]["kept_fraction"] == pytest.approx(int(n * 0.5) / n)
        stats = _stats(c)
        assert stats["completed"] == {"/v1/completions": 1} and stats["failed"] == {"/v1/completions": 2}


def test_the_token_never_appears_in_the_output(server, client):
    client.post("/completions", json={"model": "tiny", "prompt": TOKEN, "max_tokens": 2})  # even sent as a prompt
    stdout, stderr = server.stop()
    assert server.proc.returncode in (0, -15)  # uvicorn shuts down cleanly, then re-raises SIGTERM as the exit status
    assert TOKEN not in stdout + stderr
    assert stderr.splitlines()[0] == f"serving tiny at {server.url}"


def test_the_command_serves_under_a_press(tiny_llama_dir):
    srv = ServerProcess(["--model", str(tiny_llama_dir), "--press", "knorm", "--rate", "0.5", "--device", "cpu"])
    try:
        assert srv.name == tiny_llama_dir.name  # the default name: the model folder's
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            model = c.get("/models").json()["data"][0]
            assert model["workbench"] == {"press": "knorm", "press_params": {}, "rate": 0.5}
            answer = c.post("/completions", json={"model": srv.name, "prompt": PROMPT, "max_tokens": 3}).json()
        n = len(PROMPT.split()) - 1  # one word, one token; the prefill is all but the last
        assert answer["workbench"]["kept_fraction"] == pytest.approx(int(n * 0.5) / n)
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------------------------
# Flags


@pytest.mark.parametrize("argv,flag", [
    (["--press", "no-such-press"], "--press"),
    (["--press", "snapkv"], "--rate"),
    (["--press", "snapkv", "--rate", "1.5"], "--rate"),
    (["--press", "snapkv", "--rate", "nan"], "--rate"),
    (["--rate", "0.5"], "--rate"),
    (["--press", "dms", "--rate", "0.5"], "--rate"),
    (["--press", "snapkv", "--rate", "0.5", "--press-params", "{window"], "--press-params"),
    (["--press", "snapkv", "--rate", "0.5", "--press-params", "[1]"], "--press-params"),
    (["--press", "snapkv", "--rate", "0.5", "--press-params", '{"window_size": 0}'], "--press-params"),
    (["--press", "snapkv", "--rate", "0.5", "--press-params", '{"nope": 1}'], "--press-params"),
    (["--press", "adakv", "--rate", "0.5", "--press-params", '{"press": "think"}'], "--press-params"),
    (["--press-params", "{}"], "--press-params"),
    (["--port", "70000"], "--port"),
    (["--port", "http"], "--port"),
    (["--auth-env", "SERVE_TEST_UNSET_VARIABLE"], "--auth-env"),
    (["--model", "./no/such/model"], "--model"),
    (["--model", "not a model id"], "--model"),
    (["--device", "tpu"], "--device"),
    (["--dtype", "float8"], "--dtype"),
    (["--name", " "], "--name"),
    (["--bogus"], "--bogus"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(capsys, argv, flag):
    from workbench.cli import main

    assert main(["serve", *(argv if "--port" in argv else ["--port", "0", *argv])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("workbench serve: ") and flag in err


def test_a_busy_port_is_refused_before_the_model_loads(capsys):
    from workbench.cli import main
    from workbench.serve.app import listening_socket

    with listening_socket("127.0.0.1", 0) as taken:
        port = str(taken.getsockname()[1])
        assert main(["serve", "--port", port, "--model", "./no/such/model"]) == 2
    assert "--port: cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_the_serve_command_imports_no_web_server_or_torch_before_its_flags_are_good():
    code = ("import sys; from workbench.cli import main\n"
            "code = main(['serve', '--press', 'snapkv', '--rate', '2'])\n"
            "print('RESULT', code, [m for m in ('fastapi', 'uvicorn', 'starlette', 'torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "RESULT 2 []" in result.stdout, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
