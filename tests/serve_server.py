"""Real `workbench serve` servers for tests (no tests in this module): as a subprocess of the real command, or
its app in this process on uvicorn (no second model load). Both listen on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from workbench.serve.app import listening_socket

_LINE = re.compile(r"^serving (\S+) at (http://127\.0\.0\.1:\d+/v1)$")


class ServerProcess:
    """`python -m workbench serve ARGS --port 0` with its stderr collected; ``url`` ends in /v1."""

    def __init__(self, args: list[str], env: dict | None = None, timeout: float = 120):
        self.proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start: " + "".join(self.stderr_lines)[-2000:])

    url: str | None = None
    name: str | None = None

    def _read(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            match = _LINE.match(line.rstrip("\n"))
            if match and self.url is None:
                self.name, self.url = match.group(1), match.group(2)
                self._ready.set()
        self._ready.set()  # the process ended

    def stop(self) -> tuple[str, str]:
        """SIGTERM, wait; returns (stdout, stderr) of the whole run."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            stdout = self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout = self.proc.communicate()[0]
        self._reader.join(5)
        return stdout, "".join(self.stderr_lines)


@contextmanager
def serve_in_thread(app):
    """Run ``app`` (workbench.serve.app.build_app) on uvicorn in a thread; yields the base URL ending in /v1."""
    import uvicorn

    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
