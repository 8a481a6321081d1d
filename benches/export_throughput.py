"""Images per second of an exported detector (`rf-detect export`) in Python against `rf-detect
score` on the same images and CPU, side by side in one run.

Both sides start from PNG files, as a service receiving images would: `rf-detect score` decodes,
resizes and scores them in its batches of 64 (one process, its start-up and the classifier and
bundle loading included); the Python side decodes each PNG with PIL, stacks batches of 64 as
[0, 1] pixels and calls the exported module (TorchScript `torch.jit.load`, `.pt2`
`torch.export.load(...).module()`, AOTInductor `torch._inductor.aoti_load_package`), after one
untimed warm-up batch; loading the file is not timed. Same thread count on both sides
(`OMP_NUM_THREADS` for rf-detect).

Usage: export_throughput.py RF_DETECT BUNDLE EXPORT_DIR [--detector K] [--images 256]
       [--threads 2] [--side 32] [--channels 3]
Prints one Markdown table row per format: images/s and the ratio to rf-detect score.
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

args = sys.argv[1:]
rf_detect, bundle, export_dir = args[:3]


def option(name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


detector = option("--detector", "")
images = option("--images", 256)
threads = option("--threads", 2)
side = option("--side", 32)
channels = option("--channels", 3)
batch = 64
torch.set_num_threads(threads)
env = dict(os.environ, OMP_NUM_THREADS=str(threads))

rng = np.random.default_rng(3)
with tempfile.TemporaryDirectory() as tmp:
    files = []
    for i in range(images):
        pixels = rng.integers(0, 256, (side, side, channels), dtype=np.uint8)
        path = os.path.join(tmp, f"{i:04d}.png")
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(path)
        files.append(path)

    command = [rf_detect, "score", "--bundle", bundle, "--batch-size", str(batch)]
    if detector:
        command += ["--detector", detector]
    start = time.perf_counter()
    subprocess.run(command + files, capture_output=True, env=env, check=True)
    ours = images / (time.perf_counter() - start)
    print(f"| rf-detect score (PNG files, one process) | {ours:.1f} | 1.00x |")

    def load(name, path):
        if name == "TorchScript (.pt)":
            return torch.jit.load(path)
        if name == "torch.export (.pt2)":
            return torch.export.load(path).module()
        return torch._inductor.aoti_load_package(path)

    def decode(paths):
        arrays = [np.asarray(Image.open(p).convert("L" if channels == 1 else "RGB")) for p in paths]
        x = torch.from_numpy(np.stack(arrays)).float() / 255.0
        return x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2).contiguous()

    for name, file in [("TorchScript (.pt)", "detector.pt"),
                       ("torch.export (.pt2)", "detector.pt2"),
                       ("AOTInductor (.aoti.pt2)", "detector.aoti.pt2")]:
        path = os.path.join(export_dir, file)
        if not os.path.exists(path):
            print(f"| {name} | - | - |")
            continue
        module = load(name, path)
        module(decode(files[:batch]))
        start = time.perf_counter()
        for b in range(0, images, batch):
            module(decode(files[b:b + batch]))
        theirs = images / (time.perf_counter() - start)
        print(f"| {name} in Python (PIL decoding included) | {theirs:.1f} | {theirs / ours:.2f}x |",
              flush=True)
