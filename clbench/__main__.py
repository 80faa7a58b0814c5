"""``python -m clbench`` (what ``torchrun --nproc-per-node N -m clbench run ...`` starts on every rank)."""

from clbench.cli import main

raise SystemExit(main())
