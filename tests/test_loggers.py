"""Experiment loggers: a real run logs to TensorBoard, MLflow and W&B (offline), read back with
each library's own reader; a logger that is missing or fails to start is one line before training."""

from __future__ import annotations

import glob
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from battery_support import seed_folder

from clbench import registry
from test_registry import _fake_dist


def _wandb_records(run_dir: Path) -> dict[str, Any]:
    """History rows, config, summary and saved files of a W&B offline run.

    wandb keeps an offline run as a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs
    (7-byte file header, 32 KiB blocks, 7-byte record headers: crc, length, type); the records
    themselves are decoded with wandb's own protobuf classes.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "*.wandb"))
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", {"history": [], "config": {}, "summary": {}, "files": []}
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:
            break
        pending += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            which = record.WhichOneof("record_type")
            if which == "history":
                out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif which == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif which == "summary":
                out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
            elif which == "files":
                out["files"] += [f.path for f in record.files.files]
    return out


def _run(cli, bench: Path, root: Path, monkeypatch: pytest.MonkeyPatch, loggers: str) -> tuple[Path, dict[str, Any]]:
    """One logged run of ``bench`` (finetune, seed 0, two epochs a task); its folder and results."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(root)
    status, _, err = cli("run", bench, "--seed", "0", "--no-progress", "--logger", loggers, "-S", "epochs=2")
    assert status == 0, err
    run_dir = seed_folder(root / "runs" / "digits-small" / "finetune", 0)
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_a_run_logs_to_tensorboard_and_mlflow(cli, small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, results = _run(cli, small_digits, tmp_path, monkeypatch, "tensorboard,mlflow")
    rows = results["matrix"]["values"]
    columns = results["matrix"]["columns"]
    steps = sum(t["steps"] for t in results["tasks"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    assert len(events.Scalars("train/loss")) == steps and len(events.Scalars("train/lr")) == steps
    assert events.Scalars("train/lr")[0].value == pytest.approx(results["train"]["lr"])
    for j, column in enumerate(columns):
        assert [round(e.value, 6) for e in events.Scalars(f"accuracy/{column}")] == [round(row[j], 6) for row in rows]
    assert events.Scalars("metrics/last_accuracy")[0].value == pytest.approx(results["metrics"]["last_accuracy"])
    assert len(events.Scalars("telemetry/run/train_seconds")) == len(columns)
    assert {"figures/accuracy-matrix", "figures/forgetting-curves"} <= set(events.Tags()["images"])
    assert "config/text_summary" in events.Tags()["tensors"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("digits-small").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "finetune-seed0"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == steps
    history = client.get_metric_history(run.info.run_id, f"accuracy/{columns[1]}")
    assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [(t, round(row[1], 6)) for t, row in enumerate(rows)]
    assert run.data.metrics["metrics/last_accuracy"] == pytest.approx(results["metrics"]["last_accuracy"])
    assert run.data.params["benchmark"] == str(small_digits.resolve()) and run.data.params["settings.finetune.epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"config.json", "figures/accuracy-matrix.png", "figures/forgetting-curves.svg"} <= artifacts


def test_a_run_logs_to_wandb_offline(cli, small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, results = _run(cli, small_digits, tmp_path, monkeypatch, "wandb")
    rows = results["matrix"]["values"]
    columns = results["matrix"]["columns"]
    steps = sum(t["steps"] for t in results["tasks"])
    wandb_run = _wandb_records(run_dir)
    train_rows = [h for h in wandb_run["history"] if "train/loss" in h]
    assert len(train_rows) == steps and train_rows[-1]["train/step"] == steps
    task_rows = [h for h in wandb_run["history"] if "task" in h]
    assert [h[f"accuracy/{columns[0]}"] for h in task_rows] == pytest.approx([row[0] for row in rows])
    assert wandb_run["config"]["strategies"] == ["finetune"] and wandb_run["config"]["settings"]["finetune"]["epochs"] == 2
    assert wandb_run["summary"]["metrics/last_accuracy"] == pytest.approx(results["metrics"]["last_accuracy"])
    assert {"figures/accuracy-matrix.png", "figures/forgetting-curves.png"} <= set(wandb_run["files"])


def test_a_missing_logger_library_is_one_line_naming_the_extra(cli, small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError, as if not installed
    status, out, err = cli("run", small_digits, "--out", tmp_path / "runs", "--no-progress", "--logger", "tensorboard,mlflow")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "logger 'mlflow' needs the mlflow package" in err and "pip install clbench[mlflow]" in err
    assert not (tmp_path / "runs").exists()


BROKEN = '''from clbench.loggers import RunLogger

class Broken(RunLogger):
    """A logger whose service refuses the credentials."""
    def __init__(self, info):
        raise PermissionError("401 Unauthorized: bad API key")
'''


def test_a_third_party_logger_that_fails_to_start_stops_the_run_before_training(cli, small_digits: Path, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dist(tmp_path / "plugins", "broken_logger", "[clbench.loggers]\nbroken = broken_logger_mod:Broken\n", {"broken_logger_mod": BROKEN})
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    registry.refresh()
    try:
        status, _, err = cli("run", small_digits, "--out", tmp_path / "runs", "--no-progress", "--logger", "broken", "--seed", "0")
    finally:
        sys.modules.pop("broken_logger_mod", None)
        registry.refresh()
    assert status == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("clbench: error: logger 'broken' failed to start: PermissionError: 401 Unauthorized: bad API key; its folder")
    assert not any("after task" in line for line in lines)  # nothing was trained
    assert not (tmp_path / "runs" / "digits-small" / "finetune" / "seed-0").exists()


def test_unknown_and_repeated_logger_names(cli, small_digits: Path, tmp_path: Path) -> None:
    status, _, err = cli("run", small_digits, "--out", tmp_path / "runs", "--logger", "tensorbord")
    assert status == 2 and "unknown logger 'tensorbord'" in err and "tensorboard" in err
    status, _, err = cli("run", small_digits, "--out", tmp_path / "runs", "--logger", "mlflow,mlflow")
    assert status == 2 and "--logger names mlflow twice" in err


def test_losses_reach_loggers_in_order_and_a_failing_logger_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from clbench.loggers import LoggerSet, RunInfo, RunLogger

    info = RunInfo(run_dir=tmp_path, out=tmp_path, benchmark="b", strategy="s", seed=0, config={})

    class Recorder(RunLogger):
        def __init__(self, info: RunInfo) -> None:
            super().__init__(info)
            self.seen: list[tuple[int, float, float]] = []

        def log_scalars(self, scalars: dict[str, float], step: int, axis: str) -> None:
            self.seen.append((step, scalars["train/loss"], scalars["train/lr"]))

    class Flaky(RunLogger):
        def log_scalars(self, scalars: dict[str, float], step: int, axis: str) -> None:
            raise ConnectionError("server gone")

    recorder = Recorder(info)
    loggers = LoggerSet([Flaky(info), recorder])
    loggers.step = 10  # a resumed run continues the step count
    for i in range(70):
        loggers.on_step(torch.tensor(float(i)), 0.5 / (i + 1))
    assert len(recorder.seen) == 64  # two flushes of 32; the rest waits for the next row or the end
    loggers.flush()
    assert recorder.seen == [(11 + i, float(i), pytest.approx(0.5 / (i + 1))) for i in range(70)]
    assert sum("server gone" in r.getMessage() for r in caplog.records) == 1
