"""Reaching a Ray cluster that is not there: one line naming --ray, exit 2, no session written, and no wait (Ray on
its own retries an address nobody answers at for minutes, printing as it goes). Ray is not initialised here."""

from __future__ import annotations

import json
import socket
import time

import pytest

from workbench import cli, ray_cluster

pytest.importorskip("ray")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def preset(tiny_llama_dir, tmp_path):
    import ray

    if ray.is_initialized():  # an earlier test's Ray in this process would be used as it is
        pytest.skip("Ray is initialised in this process")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "tiny-ray", "model": str(tiny_llama_dir), "device": "cpu",
                                "datasets": [{"name": "wikitext2", "samples": 1}],
                                "protocol": {"context_tokens": 32, "continuation_tokens": 8},
                                "rates": [0.5], "methods": ["knorm"]}))
    return path


@pytest.mark.parametrize("address,says", [
    ("auto", "--ray auto: this machine has not joined a Ray cluster (`ray start --head`"),
    ("127.0.0.1:{port}", "--ray 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port} (Connection refused)"),
    ("headnode", "--workers/--ray: field 'execution.ray': expected auto or the head's HOST:PORT"),  # where it is read
])
def test_an_unreachable_cluster_is_one_line_and_exit_2(preset, tmp_path, capsys, address, says):
    if address == "auto":
        from ray._private.services import find_gcs_addresses

        if find_gcs_addresses():  # another process's Ray runs on this machine: "auto" joins it, rightly
            pytest.skip("a Ray cluster is running on this machine")
    port = _closed_port()
    address, says = address.format(port=port), says.format(port=port)
    out = tmp_path / "s.json"
    start = time.monotonic()
    assert cli.main(["--preset", str(preset), "--ray", address, "--out", str(out)]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert says in err.strip().splitlines()[-1] and "Traceback" not in err  # after the run's "cells to run" line
    assert not out.exists()


def test_the_check_is_what_connect_raises_for_every_caller():
    """The learned ablations' --ray goes through the same connect: a RuntimeError its CLI turns into exit 2."""
    with pytest.raises(ray_cluster.RayUnreachable, match="nothing answers") as caught:
        ray_cluster._answers(f"127.0.0.1:{_closed_port()}")
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(ray_cluster.RayUnreachable, match="expected auto"):
        ray_cluster._answers("ray://headnode")
