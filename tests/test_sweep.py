"""``clbench sweep``: grid expansion, the local and Ray executors, skip/resume, failures listed, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clbench.errors import UsageError
from clbench.sweep import expand_grid, parse_executor, split_values


def test_grid_expands_per_strategy_without_duplicates() -> None:
    from clbench import registry

    classes = {name: registry.get_strategy(name)[0].Config for name in ("lora", "finetune")}
    plans = expand_grid(["lr=1e-3,1e-2", "rank=4,8"], classes, {"lora": "lora", "finetune": "finetune"}, [0, 1],
                        {"benchmark": "digits-split", "out": Path("runs")})
    lora = [p for p in plans if p.strategy == "lora"]
    finetune = [p for p in plans if p.strategy == "finetune"]
    assert len(lora) == 2 * 2 * 2 and len(finetune) == 2 * 2  # rank is lora's only: it does not multiply finetune's runs
    assert {tuple(sorted(p.overrides.items())) for p in finetune} == {(("lr", "1e-3"),), (("lr", "1e-2"),)}
    assert all(p.resume for p in plans)
    assert split_values("[q,v],[k]") == ["[q,v]", "[k]"] and split_values("1e-4, 5e-4") == ["1e-4", "5e-4"]
    with pytest.raises(UsageError, match="empty item"):
        split_values("1,,2")
    assert parse_executor("ray:10.0.0.1:6379") == ("ray", "10.0.0.1:6379") and parse_executor("local") == ("local", None)
    with pytest.raises(UsageError, match="unknown --executor 'slurm'"):
        parse_executor("slurm")


def _folders(out: Path, bench: str) -> dict[str, set[str]]:
    return {s.name: {p.name for p in s.iterdir() if not p.name.startswith(".")} for s in (out / bench).iterdir()}


def test_local_sweep_skips_complete_runs_lists_failures_and_reports(cli, small_digits: Path, tmp_path: Path) -> None:
    out, reports = tmp_path / "runs", tmp_path / "reports"
    args = ("sweep", small_digits, "-s", "finetune", "--seed", "0", "-S", "lr=1e30,0.01", "-S", "epochs=2", "--out", out, "--report-out", reports)
    status, stdout, err = cli(*args)
    assert status == 1, err  # lr=1e30 diverges: its run fails, and the next one still runs
    assert "sweep: 1 trained, 0 already complete, 1 failed" in stdout and "[2/2]" in stdout
    failures = [line for line in err.splitlines() if line.startswith("clbench: failed:")]
    assert len(failures) == 1 and "lr=1e30 seed 0" in failures[0] and "training loss became" in failures[0], err
    assert _folders(out, "digits-small") == {"finetune": {"seed-0-S-epochs=2,lr=0.01"}}  # a failed start leaves nothing
    assert (reports / "digits-small" / "report.md").exists()
    status, stdout, _ = cli("sweep", small_digits, "-s", "finetune", "--seed", "0", "-S", "lr=0.01", "-S", "epochs=2", "--out", out, "--no-report")
    assert status == 0 and "sweep: 0 trained, 1 already complete, 0 failed" in stdout  # nothing trains again


def test_ray_extra_missing_is_one_line(cli, small_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    status, _, err = cli("sweep", small_digits, "-s", "finetune", "--out", tmp_path / "runs", "--executor", "ray")
    assert status == 2 and err.strip() == "clbench: error: --executor ray needs Ray: pip install 'clbench[ray]'"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # starts a Ray instance and 8 digits-split runs in worker processes: about a minute on 2 cores
def test_ray_sweep_two_by_two_on_digits_split(cli, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out, reports = tmp_path / "runs", tmp_path / "reports"
        args = ("sweep", "digits-split", "-s", "lora,finetune", "--seed", "0,1", "-S", "epochs=1", "-S", "lr=1e-3,1e-2", "--out", out,
                "--report-out", reports, "--executor", "ray")
        status, stdout, err = cli(*args)
        assert status == 0, err
        assert "sweep: 8 trained, 0 already complete, 0 failed" in stdout
        assert _folders(out, "digits-split") == {s: {f"seed-{n}-S-epochs=1,lr={lr}" for n in (0, 1) for lr in ("0.001", "0.01")}
                                                 for s in ("lora", "finetune")}
        status, stdout, err = cli(*args)
        assert status == 0 and "sweep: 0 trained, 8 already complete, 0 failed" in stdout, err  # a second invocation trains nothing
        report = (reports / "digits-split" / "report.md").read_text()
        for strategy in ("lora", "finetune"):  # grouped by settings: two labelled configurations of two seeds each
            assert len(re.findall(rf"\| {strategy} lr=0\.0\d+ \| 2 \|", report)) == 2, report
        ids = {json.loads(p.read_text())["run_id"] for p in out.rglob("results.json")}
        assert len(ids) == 8
    finally:
        ray.shutdown()
