"""A stand-in for `python -m workbench train CONFIG.json` in the ablation scheduler's tests (not a test module).

It reads the run's plan, appends what it saw (its start and end times, pid, CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS)
to $FAKE_TRAIN_LOG/<run>.json, prints progress lines, and writes the run record where the learned store keeps it
($WORKBENCH_DATA/learned/<run>/record.json). $FAKE_TRAIN_FAIL (run names, comma-separated) fail with exit code 3;
$FAKE_TRAIN_STEP_SECONDS is a step's length (default 0.1 s); with $FAKE_TRAIN_HOLD set it trains until SIGINT, then says where it stopped and exits 130 (as a cancelled run).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

config = json.loads(Path(sys.argv[-1]).read_text())
name = config["name"]
started = time.time()
stop = {"now": False}
signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))


def log(**extra):
    entry = {"run": name, "pid": os.getpid(), "start": started, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
             "omp": os.environ.get("OMP_NUM_THREADS"), "architecture": config["architecture"], "rate": config["rate"], **extra}
    Path(os.environ["FAKE_TRAIN_LOG"], f"{name}.json").write_text(json.dumps(entry))


log()
steps = []
for step in range(1, 1000 if os.environ.get("FAKE_TRAIN_HOLD") else 4):
    if stop["now"]:
        print(f"cancelled at step {step - 1}; checkpoint kept", flush=True)
        log(end=time.time(), cancelled=True)
        sys.exit(130)
    loss = 3.0 / step + config["rate"]
    steps.append({"step": step, "loss": loss})
    print(f"step {step}/3 loss {loss:.3f}", flush=True)
    time.sleep(float(os.environ.get("FAKE_TRAIN_STEP_SECONDS", "0.1")))
if name in os.environ.get("FAKE_TRAIN_FAIL", "").split(","):
    print("RuntimeError: CUDA out of memory (fake)", flush=True)
    log(end=time.time())
    sys.exit(3)
record = {"name": name, "config": config, "curves": {"train": steps, "val": [{"step": 3, "val_loss": 1.5, "val_ppl": 4.48}]}}
folder = Path(os.environ["WORKBENCH_DATA"], "learned", name)
folder.mkdir(parents=True, exist_ok=True)
(folder / "record.json").write_text(json.dumps(record))
log(end=time.time())
print("done", flush=True)
