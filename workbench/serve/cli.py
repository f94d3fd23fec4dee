"""``workbench serve [--model SPEC] [--press NAME [--press-params JSON]] [--rate R] [--host H] [--port N] ...``

Checks every flag before loading anything (a bad flag, an unknown press, a bad rate, a port it cannot listen
on, an unloadable model: one line naming the flag, exit 2), loads the model, then prints exactly one line on
stderr — ``serving NAME at http://HOST:PORT/v1`` — and serves until interrupted. The bearer token is read from the
environment variable that ``--auth-env`` names, never from a flag (flags show in ``ps``), and is never printed.

Imports argparse only at import time; the web server, torch and kvpress are imported once the flags are good.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_MODEL = "smollm2-135m"


class BadInput(Exception):
    """One line for the user, naming the flag."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise BadInput(message.replace("argument ", "", 1))


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535 (0: any free port), got {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected the fraction of the prompt's KV entries kept, in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench serve", description=(
        "Serve a model the workbench loads over an OpenAI-compatible HTTP API (completions and chat completions, "
        "streamed or not), optionally under a KV press: any external harness can then evaluate the press."),
        epilog="rate = fraction of the prompt's KV entries KEPT. Exit codes: 0 stopped cleanly, 2 bad input.")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="SPEC",
                   help=f"embedded model name, hub id, local folder or .gguf file (default: {DEFAULT_MODEL})")
    p.add_argument("--press", metavar="NAME", help="compress the prompt's KV cache with this press (see workbench --list methods)")
    p.add_argument("--press-params", metavar="JSON", help="the press's parameters as a JSON object, e.g. '{\"window_size\": 32}'")
    p.add_argument("--rate", type=_rate, metavar="R", help="fraction of the prompt's KV entries kept, for presses driven by a rate")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8000, metavar="N", help="port to listen on; 0 picks a free one (default: 8000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16 (default: auto)")
    p.add_argument("--auth-env", metavar="VAR", help="require 'Authorization: Bearer <token>', the token being the value of "
                   "this environment variable (never pass a token as a flag: flags show in ps)")
    p.add_argument("--name", metavar="SERVED_NAME", help="the model name clients ask for (default: from --model)")
    return p


def _press(args):
    """(MethodSpec | None, rate, resolved press traits | None) from --press, --press-params, --rate. Raises BadInput."""
    if args.press is None:
        for flag, value in (("--press-params", args.press_params), ("--rate", args.rate)):
            if value is not None:
                raise BadInput(f"{flag}: applies to a press: add --press NAME")
        return None, None, None
    from workbench.methods import presses, registry
    from workbench.methods.info import ParamError
    from workbench.plan import MethodSpec

    try:
        info = registry.lookup(args.press, "kv")
    except KeyError as err:
        raise BadInput(f"--press: {err.args[0]}") from None
    try:
        given = json.loads(args.press_params) if args.press_params is not None else {}
    except json.JSONDecodeError as err:
        raise BadInput(f"--press-params: not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(given, dict):
        raise BadInput("--press-params: expected a JSON object of parameters, e.g. '{\"window_size\": 32}'")
    try:
        params = registry.resolve_params(info, given)
        presses.check_composition(info.name, params, "--press-params")
    except ParamError as err:
        raise BadInput(f"--press-params: {err.field}: {err}") from None
    except ValueError as err:
        raise BadInput(str(err)) from None
    if info.rate_param and args.rate is None:
        raise BadInput(f"--rate: {info.name} needs a rate (fraction of the prompt's KV entries kept), e.g. --rate 0.5")
    if not info.rate_param and args.rate is not None:
        raise BadInput(f"--rate: {info.name} is driven by its own parameters and takes no rate")
    resolved = presses.resolve(info.name, params)
    if resolved.attention == "conflict":
        raise BadInput(f"--press-params: {info.name}: its presses need both eager attention and not eager attention")
    if resolved.hub_reason:
        from workbench import hub

        if hub.hf_offline() or not hub.hub_reachable():
            raise BadInput(f"--press: {resolved.hub_reason}, and the Hugging Face hub cannot be reached from here")
    return MethodSpec(name=info.name, params=params, rates=[args.rate]), args.rate, resolved


def _auth_token(args) -> str | None:
    if args.auth_env is None:
        return None
    if not args.auth_env.strip():
        raise BadInput("--auth-env: expected the NAME of an environment variable that holds the token")
    token = os.environ.get(args.auth_env, "").strip()
    if not token:
        raise BadInput(f"--auth-env: the environment variable {args.auth_env} is not set or empty")
    return token


def _served_name(args) -> str:
    if args.name is not None:
        if not args.name.strip():
            raise BadInput("--name: expected a non-empty model name")
        return args.name.strip()
    spec = args.model.strip()
    local = pathlib.Path(spec).expanduser()
    return local.name if local.exists() else spec


def _load(args, attention: str | None):
    from workbench.models import ModelLoadError, load_model, resolve_device_dtype

    try:
        device, _ = resolve_device_dtype(args.device, "auto")
    except ValueError as err:
        raise BadInput(f"--device: {err}") from None
    try:
        resolve_device_dtype(device, args.dtype)
    except ValueError as err:
        raise BadInput(f"--dtype: {err}") from None
    try:
        return load_model(args.model, device=device, dtype=args.dtype, attn_implementation=attention or "sdpa")
    except (ModelLoadError, ValueError) as err:
        raise BadInput(f"--model: {' '.join(str(err).split())}") from None


def _check_press(method, rate) -> None:
    """Build the press once, so a configuration kvpress refuses fails at start-up, not on the first request."""
    if method is None:
        return
    from workbench.methods.press_build import build_press

    try:
        build_press(method.name, method.params, rate)
    except Exception as err:  # noqa: BLE001 — kvpress refuses the configuration: the user's to fix
        raise BadInput(f"--press-params: {method.name} cannot be built: {' '.join(str(err).split())}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        name = _served_name(args)
        token = _auth_token(args)
        method, rate, resolved = _press(args)
        from workbench.serve.app import listening_socket

        try:
            sock = listening_socket(args.host, args.port)
        except OSError as err:  # a host name that does not resolve is the host's fault, not the port's
            import socket

            flag = "--host" if isinstance(err, socket.gaierror) else "--port"
            raise BadInput(f"{flag}: cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
        try:  # the port is taken before the model loads, so a busy port fails in a second, not after a load
            lm = _load(args, resolved.attention if resolved else None)
            _check_press(method, rate)
        except BadInput:
            sock.close()
            raise
    except BadInput as err:
        print(f"workbench serve: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    from workbench.serve.app import build_app, run
    from workbench.serve.engine import Engine

    info = {"press": method.name, "press_params": method.params, "rate": rate} if method is not None else {"press": None}
    app = build_app(Engine(lm, method, rate), name, token, info)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {name} at http://{shown}:{port}/v1", file=sys.stderr, flush=True)
    run(app, sock)
    return EXIT_OK
