"""The ablation grid through Ray: one actor per GPU of the cluster (one CPU each without GPUs), each running the
grid's runs handed to it as the same subprocess the local schedule starts, on its node and with the GPU Ray gave it.

The run's plan travels as JSON and its record comes back with its outcome, so a run on another node needs no
shared file system. Ray is imported only when a launcher is made (the ``ray`` extra).
"""

from __future__ import annotations

import os
import socket


class RunActor:
    """What runs inside one actor: at most one run's process at a time (the schedule never sends two)."""

    def __init__(self, workdir: str, command=None, env: dict | None = None):
        self.workdir, self.command, self.env, self.proc = workdir, command, dict(env or {}), None

    def start(self, run_name: str, config: dict) -> dict:
        from workbench.learned.ablation import RunProcess

        os.environ.update(self.env)  # the driver's data directory, so the record is found where the run writes it
        # Ray has set CUDA_VISIBLE_DEVICES to this actor's GPU; the process inherits it.
        self.proc = RunProcess(run_name, config, self.workdir, self.command)
        return {"node": socket.gethostname(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def poll(self):
        return self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class _Handle:
    def __init__(self, ray, actor):
        self.ray, self.actor = ray, actor

    def poll(self):
        return self.ray.get(self.actor.poll.remote())

    def stop(self) -> None:
        self.actor.stop.remote()


class RayLauncher:
    """``slots``: 'ray:i' for each actor. ``close()`` kills the actors (and Ray, when it was started here)."""

    def __init__(self, address: str | None, workdir: str, command=None, gpus: int | None = None, cpu_workers: int | None = None):
        from workbench import ray_cluster

        if not ray_cluster.ray_available():
            raise RuntimeError(ray_cluster.RAY_MISSING.replace("--workers/--ray and a plan's \"execution\"", "--ray"))
        self.ray, self.started_here = ray_cluster.connect(address, cpu_workers)
        ray = self.ray
        found = int(ray.cluster_resources().get("GPU", 0))
        use_gpus = found > 0 and gpus != 0
        n = (min(gpus, found) if gpus else found) if use_gpus else max(cpu_workers or 1, 1)
        options = {"num_gpus": 1} if use_gpus else {"num_cpus": 1}
        env = {k: os.environ[k] for k in ("WORKBENCH_DATA", "WORKBENCH_CACHE", "HF_HOME") if k in os.environ}
        cls = ray.remote(max_restarts=0, **options)(RunActor)
        self.actors = [cls.remote(workdir, command, env) for _ in range(n)]
        self.slots = [f"ray:{i}" for i in range(n)]
        self.where = f"{n} Ray actor{'s' * (n != 1)} ({'one GPU' if use_gpus else 'one CPU'} each)"

    def start(self, run, slot: str) -> _Handle:
        actor = self.actors[int(slot.split(":", 1)[1])]
        self.ray.get(actor.start.remote(run.name, run.config))
        return _Handle(self.ray, actor)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started_here:
            self.ray.shutdown()
