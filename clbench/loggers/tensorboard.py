"""TensorBoard logger: event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``).

Uses ``torch.utils.tensorboard.SummaryWriter`` (the writer PyTorch ships; it needs the
``tensorboard`` package, ``pip install clbench[tensorboard]``). Training scalars are indexed by
optimizer step, accuracy rows and telemetry by tasks finished (TensorBoard keeps a separate step
axis per tag). The configuration is a text summary; report figures are images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from clbench.loggers.base import Axis, RunInfo, RunLogger

FOLDER = "tensorboard"


class TensorBoardLogger(RunLogger):
    """Writes TensorBoard event files under the run directory."""

    extra: ClassVar[str | None] = "tensorboard"
    requires: ClassVar[str | None] = "tensorboard"

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(info.run_dir / FOLDER), flush_secs=30)
        self.last_task = 0

    def log_config(self, config: dict[str, Any]) -> None:
        # Markdown code block: TensorBoard's text plugin renders markdown.
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def log_scalars(self, scalars: dict[str, float], step: int, axis: Axis) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if axis == "task":
            self.last_task = max(self.last_task, step)

    def log_summary(self, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self.last_task)

    def log_artifact(self, path: Path) -> None:
        if path.suffix != ".png":  # TensorBoard shows images; the SVG twins stay in the run folder
            return
        import matplotlib.image

        image = matplotlib.image.imread(path)[..., :3]
        self.writer.add_image(f"figures/{path.stem}", image, self.last_task, dataformats="HWC")

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, self.last_task)
        self.writer.close()
