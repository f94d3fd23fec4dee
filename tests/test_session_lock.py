"""One writer per session file, and writes that never lose a file or change its mode.

In-process tests of the lock and of saving; a few real runs of the `workbench` command on the tiny
random Llama: a second writer of one --out exits 2 naming the first, --resume … --out never replaces
a file, re-reporting a finished session keeps the file's mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from real_session import plan_doc, write_session
from workbench.plan import parse_plan
from workbench.session import Session, SessionError, SessionLocked
from workbench.session_lock import acquire_session_lock, lock_path


def workbench(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hold_lock_in_child(target: Path) -> subprocess.Popen:
    """Another process holding ``target``'s lock until it is killed."""
    code = ("import sys, time; from workbench.session_lock import acquire_session_lock; "
            "acquire_session_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def small_session(tmp_path: Path, name: str = "s.json") -> Session:
    return Session(parse_plan(plan_doc("smollm2-135m"), source="test"), tmp_path / name)


# --- the lock ---------------------------------------------------------------------------------------

def test_a_save_while_another_process_writes_the_file_is_refused_naming_it(tmp_path):
    session = small_session(tmp_path)
    child = hold_lock_in_child(session.path)
    try:
        with pytest.raises(SessionLocked, match=rf"pid {child.pid}\b"):
            session.save()
        with pytest.raises(SessionLocked, match=str(session.path)):
            session.acquire_lock()
        assert not session.path.exists()
    finally:
        child.kill()
        child.wait()
    session.save()  # the holder died: its lock file stays, but blocks nobody
    assert session.path.exists()


def test_the_lock_is_held_while_running_and_released_after(tmp_path):
    session = small_session(tmp_path)
    session.status = "running"
    session.save()
    assert lock_path(session.path).read_text().strip() == str(os.getpid())
    check = subprocess.run([sys.executable, "-c", "import sys; from workbench.session_lock import acquire_session_lock; "
                            "acquire_session_lock(sys.argv[1])", str(session.path)], capture_output=True, text=True)
    assert check.returncode != 0 and "SessionLocked" in check.stderr and f"pid {os.getpid()}" in check.stderr
    session.status = "finished"
    session.save()
    assert not lock_path(session.path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_an_explicit_lock_outlives_saves_until_released(tmp_path):
    session = small_session(tmp_path)
    session.acquire_lock()
    session.save()
    assert lock_path(session.path).exists()
    session.release_lock()
    assert not lock_path(session.path).exists()


def test_two_sessions_of_one_process_share_the_lock(tmp_path):
    # The app runs one worker at a time; a session opened again in the same process must not lock itself out.
    first, second = small_session(tmp_path), small_session(tmp_path)
    first.acquire_lock()
    second.save()  # takes and lets go of its share; the first still holds the lock
    assert acquire_session_lock(tmp_path / "s.json").held and lock_path(first.path).exists()
    first.release_lock()
    assert not lock_path(first.path).exists()


def test_save_into_an_unwritable_place_is_a_session_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SessionError, match="not a folder|does not exist|cannot make its folder"):
        small_session(tmp_path, "file/s.json").save()
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(SessionError, match="dir.json"):
        small_session(tmp_path, "dir.json").save()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_save_into_a_read_only_folder_is_a_session_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(SessionError, match="permission denied"):
            small_session(folder).save()
    finally:
        folder.chmod(0o755)


# --- modes -----------------------------------------------------------------------------------------

def test_a_save_keeps_the_file_mode_and_a_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        session = small_session(tmp_path)
        session.save()
        assert session.path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    for mode in (0o644, 0o600, 0o664):
        session.path.chmod(mode)
        session.save()
        assert session.path.stat().st_mode & 0o777 == mode


# --- real runs --------------------------------------------------------------------------------------

def tiny_preset(tmp_path: Path, model: Path, name: str = "tiny", samples: int = 2, rates=(0.5,)) -> Path:
    preset = {"name": name, "model": str(model), "datasets": [{"name": "wikitext2", "samples": samples}],
              "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": list(rates),
              "methods": ["knorm", "tova"], "shared_prefill": False}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(preset))
    return path


def test_a_second_run_on_a_locked_out_exits_2_naming_the_holder(tmp_path, tiny_llama_dir):
    out = tmp_path / "s.json"
    child = hold_lock_in_child(out)
    try:
        result = workbench("--preset", tiny_preset(tmp_path, tiny_llama_dir), "--out", out, cwd=tmp_path)
    finally:
        child.kill()
        child.wait()
    assert result.returncode == 2, result.stderr
    assert f"pid {child.pid}" in result.stderr and str(out) in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_concurrent_runs_on_one_out_lose_nothing(tmp_path, tiny_llama_dir):
    """A runs; B (another plan) and C (the same plan) start on A's file while it runs: B is refused, the file
    ends as A's complete session, and C either waited its turn (lock: exit 2) or re-reported it (exit 0)."""
    out = tmp_path / "s.json"
    plan_a = tiny_preset(tmp_path, tiny_llama_dir, "a", samples=6, rates=(0.75, 0.5, 0.25))
    plan_b = tiny_preset(tmp_path, tiny_llama_dir, "b", samples=2)
    a = subprocess.Popen([sys.executable, "-m", "workbench", "--preset", str(plan_a), "--out", str(out)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 240
    while not out.exists() and time.time() < deadline and a.poll() is None:
        time.sleep(0.05)
    assert out.exists(), a.stderr.read() if a.poll() is not None else "A wrote nothing"
    b = workbench("--preset", plan_b, "--out", out, cwd=tmp_path)
    c = workbench("--preset", plan_a, "--out", out, cwd=tmp_path)
    assert a.wait(timeout=300) == 0, a.stderr.read()
    assert b.returncode == 2 and str(out) in b.stderr and "Traceback" not in b.stderr
    assert c.returncode in (0, 2) and "Traceback" not in c.stderr
    if c.returncode == 2:
        assert f"pid {a.pid}" in c.stderr
    final = json.loads(out.read_text())
    assert final["plan"]["name"] == "a" and final["status"] == "finished"
    assert all(cell["status"] == "done" and cell["samples_done"] == 6 for cell in final["cells"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no lock or temporary file left


def test_resume_with_out_writes_a_new_file_and_never_replaces_one(tmp_path, tiny_llama_dir):
    source = write_session(tmp_path, str(tiny_llama_dir), "source.json")
    source.chmod(0o644)
    before = digest(source)
    copy = tmp_path / "copy.json"
    first = workbench("--resume", source, "--out", copy, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert digest(source) == before and copy.exists()
    copied = digest(copy)
    again = workbench("--resume", source, "--out", copy, cwd=tmp_path)
    assert again.returncode == 2 and str(copy) in again.stderr and "--out" in again.stderr
    assert digest(copy) == copied and digest(source) == before
    child = hold_lock_in_child(copy)  # resuming the copy itself while another process writes it
    try:
        locked = workbench("--resume", copy, cwd=tmp_path)
    finally:
        child.kill()
        child.wait()
    assert locked.returncode == 2 and f"pid {child.pid}" in locked.stderr and digest(copy) == copied


def test_re_reporting_a_finished_session_keeps_its_mode(tmp_path, tiny_llama_dir):
    session = write_session(tmp_path, str(tiny_llama_dir))
    for mode in (0o644, 0o640):
        session.chmod(mode)
        result = workbench("--resume", session, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert session.stat().st_mode & 0o777 == mode


def test_cuda_on_a_machine_without_it_writes_nothing_and_blocks_nothing(tmp_path, tiny_llama_dir):
    """The README's `--device cuda` on a CPU machine: exit 2 before a session exists, so the next run starts."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    preset, out = tiny_preset(tmp_path, tiny_llama_dir), tmp_path / "s.json"
    result = workbench("--preset", preset, "--out", out, "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2 and "field 'device'" in result.stderr and not out.exists()
    assert workbench("--preset", preset, "--out", out, "--dry-run", cwd=tmp_path).returncode == 0


def test_sigkilled_holder_leaves_a_stale_lock_file_that_blocks_nobody(tmp_path):
    target = tmp_path / "s.json"
    child = hold_lock_in_child(target)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_path(target).exists()
    session = small_session(tmp_path)
    session.save()
    assert not lock_path(target).exists()


def test_a_file_written_between_the_first_look_and_the_lock_is_seen(tmp_path):
    """Another run may finish on --out after this run checked it: under the lock the file is read again."""
    from workbench import cli

    out = tmp_path / "s.json"
    plan = parse_plan(plan_doc("smollm2-135m"), source="test")
    checked = cli._session_for(plan, None, str(out))  # nothing there yet: a new session
    other = parse_plan({**plan_doc("smollm2-135m"), "name": "other", "rates": [0.25]}, source="test")
    Session(other, out).save()  # meanwhile another run writes its session there
    before = digest(out)
    with pytest.raises(SessionError, match="different plan"):
        cli._locked_session(checked, plan, None, str(out))
    assert digest(out) == before and not lock_path(out).exists()
    finished = write_session(tmp_path, "smollm2-135m", "s.json")  # now a finished session of this very plan
    session = cli._locked_session(checked, plan, None, str(finished))
    try:
        assert session.status == "finished" and all(c["samples_done"] == 2 for c in session.cells.values())
    finally:
        session.release_lock()
    assert not lock_path(out).exists()
