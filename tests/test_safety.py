"""Guarantees that need real processes or real file systems.

- One writer per run directory: a second process is refused with one line naming the first's
  PID (plain, ``--resume`` and ``--overwrite``); two processes started together leave exactly one
  run on disk, the one whose numbers were printed.
- ``kill -9`` at several points late in a run (and during an ``--overwrite``, before and after its
  first checkpoint): ``--resume`` ends with the numbers of an uninterrupted run (matrix, metrics,
  loss curves, intervals and the very bytes of ``examples.npz``), the stale lock is taken over, and
  an interrupted overwrite gives the earlier run back (with its ``examples.npz``) when it had no
  checkpoint.
- A real full disk (a small tmpfs in a private mount namespace), a real read-only folder (a
  read-only bind mount there) and a real file-size limit (``RLIMIT_FSIZE`` with SIGXFSZ ignored,
  which makes writes fail with EFBIG): one line, nothing half-written, the earlier run intact.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from battery_support import BENCH, TINY_BENCH, assert_unchanged, bench_toml, clbench_command, digit_tasks, snapshot
from clbench.runner import RunOptions, run

FOUR_TASKS = bench_toml("Four tasks of split digits, long enough to be killed inside one.", "mlp:16", digit_tasks(4), "epochs = 25\nbatch_size = 64\nlr = 0.01\n")


def _bench(folder: Path, text: str = TINY_BENCH) -> Path:
    path = folder / "bench" / f"{BENCH}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # processes that only need to be running, not fast, leave the other core alone


def _start(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([*clbench_command(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(proc: subprocess.Popen[str], ready: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"process ended first: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.01)


def _tasks_done(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())["tasks_done"])
    except (OSError, ValueError, KeyError):
        return 0


def _message(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("clbench:"))
    assert "Traceback" not in stderr
    return lines[start:]


# ---- one writer per run directory -------------------------------------------------------------------------------------------------------------
def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    out = tmp_path / "runs"
    run_dir = out / BENCH / "finetune" / "seed-0-S-epochs=1000000"
    first = _start("run", bench, "--out", out, "--no-progress", "-S", "epochs=1000000", env=ONE_THREAD)
    try:
        _wait_for(first, lambda: (run_dir / "results.json").exists())
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = subprocess.run([*clbench_command(), "run", str(bench), "--out", str(out), "--no-progress", "-S", "epochs=1000000", *extra], capture_output=True, text=True,
                                    env=ONE_THREAD)
            assert second.returncode == 3, second.stderr
            assert _message(second.stderr) == [second.stderr.strip()]
            assert f"is in use by process {first.pid} on " in second.stderr and ".seed-0-S-epochs=1000000.lock" in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143 and _message(err) == [f"clbench: terminated (SIGTERM); its folder {run_dir} was removed"]
    assert not (out / BENCH / "finetune").exists() or not any((out / BENCH / "finetune").iterdir())


def test_two_processes_started_together_leave_one_consistent_run(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    out = tmp_path / "runs"
    # Other backbones, the same folder (-S values would name two folders, and both runs would finish).
    procs = {width: _start("run", bench, "--out", out, "--no-progress", "--backbone", f"mlp:{width}", "-S", "epochs=20", env=ONE_THREAD)
             for width in ("16", "24")}
    results = {width: (p.wait(timeout=600), *p.communicate()) for width, p in procs.items()}
    winners = [lr for lr, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    code, _, err = results[loser]
    assert code in (2, 3) and len(_message(err)) == 1, err  # 3: refused by the lock; 2: the winner had already finished
    if code == 3:
        assert f"in use by process {procs[winners[0]].pid}" in err
    saved = json.loads((out / BENCH / "finetune" / "seed-0-S-epochs=20" / "results.json").read_text())
    assert saved["status"] == "complete" and saved["backbone"]["spec"] == f"mlp:{winners[0]}"
    printed = next(line for line in results[winners[0]][1].splitlines() if line.startswith("finetune"))
    from clbench.cli.summary import metric_cell

    assert metric_cell(saved["metrics"]["last_accuracy"], saved["intervals"]["last_accuracy"]) in printed  # Last and its interval


def test_a_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    from clbench.errors import RunInUseError
    from clbench.rundir import RunDirectory

    run_dir = tmp_path / "b" / "s" / "seed-0"
    with RunDirectory(run_dir, "new"):
        with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()} on "):
            RunDirectory(run_dir, "resume").__enter__()
        assert run_dir.is_dir()
    assert not (run_dir.parent / ".seed-0.lock").exists()


# ---- kill -9 late in a run ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("kill")
    bench = _bench(folder, FOUR_TASKS)
    return bench, run(RunOptions(benchmark=str(bench), strategy="finetune", seed=3, out=folder / "reference", progress=False))


def _same_numbers(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    """The same matrix, metrics and loss curves, and the same per-example scores (file bytes, so the same intervals)."""
    assert resumed["status"] == "complete"
    assert resumed["matrix"]["values"] == reference["matrix"]["values"]
    assert resumed["metrics"] == reference["metrics"]
    assert [t["loss_curve"] for t in resumed["tasks"]] == [t["loss_curve"] for t in reference["tasks"]]
    assert resumed["intervals"] == reference["intervals"] and resumed["plasticity"] == reference["plasticity"]
    assert resumed["examples"] == reference["examples"] and resumed["examples"]["rows_evaluated"] == len(resumed["matrix"]["values"])
    assert (Path(resumed["_path"]).parent / "examples.npz").read_bytes() == (Path(reference["_path"]).parent / "examples.npz").read_bytes()


# The child kills itself at a chosen point rather than being killed after a delay: on a fast machine
# a delay overshoots (the run finishes first), on a loaded one it undershoots.
KILL_AT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    from clbench import checkpoint
    from clbench.runner import RunOptions, run

    pointers_before_kill, steps_after = int(sys.argv[3]), int(sys.argv[4])  # steps_after < 0: kill right after the pointer
    real_write, real_step, state = checkpoint.write_bytes_atomic, torch.optim.AdamW.step, {"pointers": 0, "steps": 0}

    def write(path, data):
        real_write(path, data)
        if Path(path).name == "checkpoint.json":
            state["pointers"] += 1
            if state["pointers"] == pointers_before_kill and steps_after < 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def step(self, *args, **kwargs):
        if state["pointers"] == pointers_before_kill:
            state["steps"] += 1
            if state["steps"] > steps_after >= 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, *args, **kwargs)

    checkpoint.write_bytes_atomic = write
    torch.optim.AdamW.step = step
    run(RunOptions(benchmark=sys.argv[1], strategy="finetune", seed=3, out=Path(sys.argv[2]), progress=False))
""")


@pytest.mark.parametrize(("point", "tasks_done", "steps_after"), [
    pytest.param("right after checkpoint 2", 2, -1, marks=pytest.mark.slow),  # the default suite keeps two points here, two in the overwrite test
    ("inside task 3", 2, 60),
    pytest.param("right after checkpoint 3", 3, -1, marks=pytest.mark.slow),
    ("after the last checkpoint", 4, -1),
])
def test_kill_9_late_in_a_run_resumes_to_the_same_numbers(reference: tuple[Path, dict[str, Any]], tmp_path: Path, point: str, tasks_done: int,
                                                          steps_after: int) -> None:
    bench, expected = reference
    out = tmp_path / "runs"
    run_dir = out / BENCH / "finetune" / "seed-3"
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(bench), str(out), str(tasks_done), str(steps_after)], capture_output=True, text=True,
                            env=ONE_THREAD)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _tasks_done(run_dir) == tasks_done, point
    assert (run_dir.parent / ".seed-3.lock").exists()  # left behind by the killed holder
    if point == "inside task 3":  # plus what a kill in the middle of saving checkpoint 3 would have left on disk
        (run_dir / "checkpoint" / ".task-003.safetensors.x1y2.tmp").write_bytes(b"half a checkpoint")
        (run_dir / ".results.json.x1y2.tmp").write_text('{"half": ')
        (run_dir / ".examples.npz.x1y2.tmp").write_bytes(b"PK\x03\x04 half a zip")
    resumed = run(RunOptions(benchmark=str(bench), strategy="finetune", seed=3, out=out, resume=True, progress=False))
    _same_numbers(resumed, expected)
    assert not (run_dir.parent / ".seed-3.lock").exists(), point
    assert not list(run_dir.rglob("*.tmp")), point
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["checkpoint.json", "task-004.safetensors"], point


KILL_BEFORE_POINTER_2 = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from clbench import checkpoint
    from clbench.runner import RunOptions, run

    real, pointers = checkpoint.write_bytes_atomic, []

    def write(path, data):
        if Path(path).name == "checkpoint.json":
            pointers.append(path)
            if len(pointers) == 2:  # checkpoint 2's tensors and examples.npz are written, its pointer is not
                os.kill(os.getpid(), signal.SIGKILL)
        real(path, data)

    checkpoint.write_bytes_atomic = write
    run(RunOptions(benchmark=sys.argv[1], strategy="finetune", seed=5, out=Path(sys.argv[2]), progress=False))
""")


def test_kill_9_between_the_scores_and_the_pointer_of_a_checkpoint(tmp_path: Path) -> None:
    """``examples.npz`` is written with each checkpoint, after its tensors and before its pointer: a
    run killed in between holds one row more than its checkpoint; ``--resume`` drops that row,
    evaluates it again and ends with the bytes of an uninterrupted run."""
    from clbench.example_scores import ExampleScores

    bench = _bench(tmp_path)
    options = {"benchmark": str(bench), "strategy": "finetune", "seed": 5, "progress": False}
    expected = run(RunOptions(**options, out=tmp_path / "reference"))
    out = tmp_path / "runs"
    run_dir = out / BENCH / "finetune" / "seed-5"
    killed = subprocess.run([sys.executable, "-c", KILL_BEFORE_POINTER_2, str(bench), str(out)], capture_output=True, text=True, env=ONE_THREAD)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _tasks_done(run_dir) == 1 and (run_dir / "checkpoint" / "task-002.safetensors").exists()
    assert ExampleScores.load(run_dir / "examples.npz").evaluated() == [True, True, True, False]
    _same_numbers(run(RunOptions(**options, out=out, resume=True)), expected)
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["checkpoint.json", "task-003.safetensors"]


def test_kill_9_during_an_overwrite(reference: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    bench, expected = reference
    out = tmp_path / "runs"
    run_dir = out / BENCH / "finetune" / "seed-3"
    previous = run_dir.parent / ".seed-3.previous"
    shutil.copytree(Path(expected["_path"]).parent, run_dir)
    original = {name: (run_dir / name).read_bytes() for name in ("results.json", "examples.npz", "config.json")}

    # Killed before its first checkpoint: the next run of the directory gives the earlier run back. (The slow run is the same
    # benchmark name and version with a huge budget, so it overwrites the same folder; -S epochs=... would name another folder.)
    slow = tmp_path / "slow" / bench.name
    slow.parent.mkdir()
    slow.write_text(bench.read_text().replace("epochs = 25", "epochs = 100000"))
    proc = _start("run", slow, "--out", out, "--seed", "3", "--overwrite", "--no-progress")
    _wait_for(proc, lambda: previous.exists() and (run_dir / "results.json").exists())
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    restored = run(RunOptions(benchmark=str(bench), strategy="finetune", seed=3, out=out, resume=True, progress=False))
    assert {name: (run_dir / name).read_bytes() for name in original} == original and not previous.exists()
    assert restored["matrix"] == expected["matrix"]

    # Killed after its first checkpoint: the new run is resumable and the earlier one waits aside until it completes.
    proc = _start("run", bench, "--out", out, "--seed", "3", "--overwrite", "--no-progress", "--backbone", "mlp:24")
    _wait_for(proc, lambda: previous.exists() and _tasks_done(run_dir) >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert json.loads((previous / "results.json").read_text())["status"] == "complete"
    assert (previous / "examples.npz").read_bytes() == original["examples.npz"]  # staged with the run it belongs to
    from clbench.report import find_results

    assert find_results([out]) == [run_dir / "results.json"]  # the staged run is never reported twice
    resumed = run(RunOptions(benchmark=str(bench), strategy="finetune", seed=3, out=out, resume=True, progress=False, backbone="mlp:24"))
    fresh = run(RunOptions(benchmark=str(bench), strategy="finetune", seed=3, out=tmp_path / "fresh", progress=False, backbone="mlp:24"))
    _same_numbers(resumed, fresh)
    assert not previous.exists()


# ---- real file systems --------------------------------------------------------------------------------------------------------------------------
def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
                           capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(not _namespaces_work(), reason="needs unprivileged user and mount namespaces (unshare) for a private tmpfs")

IN_NAMESPACE = textwrap.dedent('''
    import hashlib, json, os, shutil, subprocess, sys
    from pathlib import Path
    work, clbench, template = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def snapshot(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}

    disk = work / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], check=True)
    shutil.copytree(template / "runs", disk / "runs")
    ro = work / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(template), str(ro)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # leave the disk full to the last page
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    os.close(fd)
    bench = str(template / "bench" / "digits-tiny.toml")
    cases = {
        "overwrite-full": ["run", bench, "--out", str(disk / "runs"), "--overwrite", "--no-progress"],
        "new-full": ["run", bench, "--out", str(disk / "runs"), "--seed", "9", "--no-progress"],
        "checkpoint-too-big": None,
        "run-read-only": ["run", bench, "--out", str(ro / "runs"), "--seed", "9", "--no-progress"],
        "report-read-only": ["report", str(template / "runs"), "--out", str(ro / "reports")],
    }
    found = {}
    for name, args in cases.items():
        if name == "checkpoint-too-big":  # room for the small files, not for a checkpoint of mlp:4096
            filler.unlink()
            args = ["run", bench, "--out", str(disk / "runs"), "--overwrite", "--backbone", "mlp:4096", "--no-progress"]
        before = snapshot(work)
        result = subprocess.run([clbench, *args], capture_output=True, text=True)
        found[name] = {"code": result.returncode, "stderr": result.stderr, "unchanged": snapshot(work) == before}
    print(json.dumps(found))
''')


@needs_namespaces
def test_full_disk_and_read_only_folder_for_real(tmp_path: Path) -> None:
    template = tmp_path / "template"
    bench = _bench(template)
    run(RunOptions(benchmark=str(bench), strategy="finetune", seed=0, out=template / "runs", progress=False))
    script = tmp_path / "in_namespace.py"
    script.write_text(IN_NAMESPACE, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(script), str(work), clbench_command()[0],
                             str(template)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    expect = {"overwrite-full": (1, "the disk is full; free some space and rerun; the earlier run in"),
              "new-full": (1, "the disk is full"),
              "checkpoint-too-big": (1, "not enough free space in"),
              "run-read-only": (2, "is not writable"),
              "report-read-only": (2, "is not writable")}
    for name, (code, text) in expect.items():
        assert found[name]["code"] == code, (name, found[name])
        message = _message(found[name]["stderr"])
        assert len(message) == 1 and text in message[0], (name, message)
        assert found[name]["unchanged"], name
    assert "read-only" in found["run-read-only"]["stderr"]


def _file_size_limit(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_stops_the_run_cleanly(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    out = tmp_path / "runs"
    run(RunOptions(benchmark=str(bench), strategy="finetune", seed=0, out=out, progress=False))
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for extra in (["--seed", "5"], ["--overwrite"]):  # a checkpoint of mlp:512 is ~150 KB, results stay far below 64 KB
        proc = subprocess.run([*clbench_command(), "run", str(bench), "--out", str(out), "--backbone", "mlp:512", "--no-progress", *extra],
                              capture_output=True, text=True, preexec_fn=_file_size_limit(64 << 10), env=env)
        message = _message(proc.stderr)
        assert proc.returncode == 1 and len(message) == 1, proc.stderr
        assert "task-001.safetensors: the file-size limit was reached" in message[0]
        assert_unchanged(before, snapshot(tmp_path))
