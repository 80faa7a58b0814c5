"""Images per second of the CLIP preprocessing pipeline through clbench's training loader, with 0, 1 and 2 workers.

Writes a synthetic image folder (JPEGs of ``--size``, random noise, so decoding costs what a real
photo of that size costs), wraps it in clbench's ``ImageTaskDataset`` and loads it the way the runner
does (``clbench.distributed.train_loader``: numbered batches, the collate seeded per batch) with
open_clip's training transform for a 224-pixel CLIP (RandomResizedCrop, bicubic resize, normalise).
Prints images/s per worker count (wall clock over ``--epochs`` passes after a warm-up batch) and the
speed-up over 0 workers. Worker processes need free cores: on a loaded machine the speed-up shrinks.

    python perf/dataloader_throughput.py                      # 256 images of 500x375, batch 32, 0/1/2 workers
    python perf/dataloader_throughput.py --images 1024 --workers 0,2,4,8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_folder(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="500x375", help="image width x height (default: 500x375, a typical photo)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    import open_clip

    from clbench import distributed
    from clbench.data.vision_base import ImageTaskDataset, open_rgb
    from clbench.loading import LoaderOptions

    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    transform = open_clip.image_transform(224, is_train=True)

    def collate(items: list[dict]) -> torch.Tensor:
        return torch.stack([transform(item["image"]) for item in items])

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_folder(Path(tmp), args.images, (width, height))
        data = ImageTaskDataset(lambda i: open_rgb(paths[i]), np.arange(len(paths)), np.zeros(len(paths), dtype=np.int64), 0)
        print(f"{args.images} JPEGs of {width}x{height}, batch {args.batch}, open_clip train transform at 224; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        base = None
        for workers in (int(w) for w in args.workers.split(",")):
            loader, _ = distributed.train_loader(data, args.batch, torch.Generator().manual_seed(0), collate, LoaderOptions(workers=workers))
            iterator = iter(loader)
            next(iterator)  # warm-up: worker start-up and the first batch
            start, seen = time.perf_counter(), 0
            for _ in range(args.epochs):
                for batch in iterator:
                    seen += len(batch)
                iterator = iter(loader)
            rate = seen / (time.perf_counter() - start)
            base = base or rate
            print(f"workers {workers}: {rate:8.1f} images/s   x{rate / base:.2f} vs 0 workers", flush=True)


if __name__ == "__main__":
    main()
