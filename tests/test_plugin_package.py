"""A third-party strategy package (the copyable template) is built, installed and run by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_template_plugin_installs_and_runs_through_the_cli(tmp_path: Path, small_digits: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO / "templates" / "strategy-plugin", source)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    clbench = str(Path(sys.executable).with_name("clbench"))
    listing = subprocess.run([clbench, "list", "strategies"], capture_output=True, text=True, env=env, check=True).stdout
    assert "l2-anchor" in listing and "clbench-l2-anchor 0.1.0" in listing
    out = tmp_path / "runs"
    done = subprocess.run([clbench, "run", str(small_digits), "-s", "l2-anchor", "-S", "strength=0.5", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "digits-small" / "l2-anchor" / "seed-0-S-strength=0.5" / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["strategy"]["package"] == "clbench-l2-anchor" and results["strategy"]["version"] == "0.1.0"
    assert results["strategy"]["config"]["strength"] == 0.5
    assert results["telemetry"][-1]["squared_drift_from_anchor"] > 0
    disabled = subprocess.run([clbench, "run", str(small_digits), "-s", "l2-anchor", "--out", str(out)], capture_output=True, text=True,
                              env={**env, "CLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert disabled.returncode == 2 and "unknown strategy 'l2-anchor'" in disabled.stderr
