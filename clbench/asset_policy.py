"""Where assets come from: the one owner of the data root and of whether downloads are allowed.

Datasets are read from the data root (``--data-root`` or ``$CLBENCH_DATA_ROOT``); pretrained
weights and datasets are downloaded only when ``--allow-download`` (``$CLBENCH_ALLOW_DOWNLOAD=1``)
asks for it and ``$HF_HUB_OFFLINE`` does not forbid it. The runner decides once per run
(:func:`resolve_downloads`) and passes the answer to the backbone factory as ``allow_download``;
the environment is read only here, as the default for callers that pass nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

ALLOW_DOWNLOAD_ENV = "CLBENCH_ALLOW_DOWNLOAD"
DATA_ROOT_ENV = "CLBENCH_DATA_ROOT"
_TRUE = frozenset({"1", "true", "yes"})


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in _TRUE


def downloads_allowed() -> bool:
    """Downloads need ``$CLBENCH_ALLOW_DOWNLOAD=1`` (``--allow-download``) and no ``$HF_HUB_OFFLINE``."""
    return _flag(ALLOW_DOWNLOAD_ENV) and not _flag("HF_HUB_OFFLINE")


def resolve_downloads(allow_download: bool | None) -> bool:
    """One download decision: ``None`` asks the environment (:func:`downloads_allowed`), ``True``
    (``--allow-download``) allows unless ``$HF_HUB_OFFLINE`` forbids, ``False`` forbids."""
    if allow_download is None:
        return downloads_allowed()
    return allow_download and not _flag("HF_HUB_OFFLINE")


def default_data_root() -> Path | None:
    """The data root from ``$CLBENCH_DATA_ROOT``, if set."""
    value = os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser() if value else None
