"""Feature-extraction throughput of ResNet-34 (full width) in Python torch: the counterpart of
examples/feature_throughput.rs. Usage: bench_features.py BATCH BATCHES [THREADS]."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_models  # noqa: E402

batch, batches = int(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3 and int(sys.argv[3]) > 0:
    torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
net = reference_models.build("resnet", 64, 10).eval()
x = torch.randn(batch, 3, 32, 32)


def run():
    with torch.no_grad():
        logits, feats = net.feature_list(x)
        return logits, [f.view(f.size(0), f.size(1), -1).mean(2) for f in feats]


run()
start = time.perf_counter()
for _ in range(batches):
    run()
print("python batch %d: %.1f img/s" % (batch, batch * batches / (time.perf_counter() - start)))
