"""Throughput of the synthetic city generator on one core, JPEG and PNG encoding included.

Run: `python bench/bench_synthetic.py [--images N]`. Each image is sampled, rendered and encoded exactly as
`generate` does (JPEG quality 90, lossless PNG label map), into memory so the disk does not dominate; a
last line times `generate` end to end (files written) at 224x224. CPU seconds are reported beside wall
seconds because a shared machine slows the wall clock.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from citylens.data.synthetic import (
    DEFAULT_CITIES,
    JPEG_QUALITY,
    OPTIONAL,
    city_probabilities,
    generate,
    image_seed,
    normalize_cities,
    render_scene,
    sample_contents,
)

TARGET = 200.0  # images/s at 224x224 on one core, encoding included


def bench_encode(size: int, images: int) -> tuple[float, float]:
    """Images per second (wall, CPU) for sample + render + JPEG + PNG at `size`."""
    probs = city_probabilities(normalize_cities(DEFAULT_CITIES))["tokyo"]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(images):
        objects, night = sample_contents(0, 0, i, [probs[name] for name in OPTIONAL], 0.3)
        image, label = render_scene(image_seed(0, 0, i), size, objects, night)
        Image.fromarray(image).save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)
        Image.fromarray(label).save(io.BytesIO(), "PNG", compress_level=1)
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def bench_generate(images: int) -> float:
    """Images per second for `generate` writing files at 224x224 with one worker (wall clock)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(Path(tmp), cities=DEFAULT_CITIES, images_per_city=images // 2, size=224, progress=False)
        return 2 * (images // 2) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="images per measurement")
    args = parser.parse_args()
    bench_encode(224, 20)  # warm-up: imports, caches
    for size in (224, 64):
        wall, cpu = bench_encode(size, args.images)
        target = f" (target >= {TARGET:.0f})" if size == 224 else ""
        print(f"synthetic generator {size}x{size}: {wall:.0f} img/s wall, {cpu:.0f} img/s CPU{target}")
    print(f"synthetic generate() to disk 224x224, 1 worker: {bench_generate(args.images):.0f} img/s wall")


if __name__ == "__main__":
    main()
