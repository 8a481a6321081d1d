"""What a user runs today: flow training structured like the reference's Residual_flow_train.py.

Written from `docs/method.md#the-residual-flow` and `docs/method.md#flow-training`: one RealNVP
module per class (the tests' transcription of the reference's module, tests/it/flow_ref/realnvp.py:
full k x h products with multiplicative masks, weight-normalised rescale; initialised as
`docs/method.md#initialisation` says, last layers zero), one torch.optim.Adam per class (lr 1e-5),
one shuffled DataLoader per class (batch 256), loss = -sum of log p over the batch, one iteration =
every class's train pass then its validation pass.

Usage: reference_flow_train.py K ITERATIONS THREADS [CLASSES TRAIN VALIDATION]
Prints one JSON line: {"k": K, "seconds": [per timed iteration], "threads": N}. The first iteration
is a warm-up and not timed. Features are random (the timing does not depend on their values).
"""
import json
import math
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

# The reference's RealNVP as the tests write it out (tests/it/flow_ref/realnvp.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "it", "flow_ref"))
from realnvp import RealNVP  # noqa: E402


def new_flow(a_inv, perms):
    """A flow at the reference's initialisation (`docs/method.md#initialisation`): masks right,
    left, ...; the given permutations and whitening; last layers zero, rescale g = sqrt(k),
    v = ones."""
    k = a_inv.shape[0]
    flow = RealNVP({"k": k, "length_hidden": 1.0, "log_abs_det_a_inv": 0.0, "dim": k})
    half = k // 2
    right = torch.cat([torch.zeros(half), torch.ones(k - half)])
    with torch.no_grad():
        flow.mask.copy_(torch.stack([right if i % 2 == 0 else 1 - right for i in range(10)]))
        flow.A_.copy_(a_inv)
        for j, perm in enumerate(perms):
            flow.perm[j].perm.copy_(perm)
        for net in list(flow.s) + list(flow.t):
            net.fc3.weight.zero_()
            net.fc3.bias.zero_()
        for net in flow.s:
            net.rescale.weight_g.fill_(math.sqrt(k))
    return flow


def main():
    k, iterations, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    classes, train, validation = (int(v) for v in (sys.argv[4:7] or (10, 4000, 1000)))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    a_inv = torch.linalg.qr(torch.randn(k, k))[0]
    perms = [torch.randperm(k) for _ in range(5)]
    flows, opts, loaders, val_loaders = [], [], [], []
    for _ in range(classes):
        flow = new_flow(a_inv, perms)
        flows.append(flow)
        opts.append(torch.optim.Adam(flow.parameters(), lr=1e-5))
        loaders.append(DataLoader(TensorDataset(torch.randn(train, k)), batch_size=256, shuffle=True))
        val_loaders.append(DataLoader(TensorDataset(torch.randn(validation, k)), batch_size=256))
    seconds = []
    for it in range(iterations + 1):
        start = time.perf_counter()
        for flow, opt, loader, val_loader in zip(flows, opts, loaders, val_loaders):
            for (x,) in loader:
                loss = -flow.log_prob(x).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                for (x,) in val_loader:
                    flow.log_prob(x).sum()
        if it > 0:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"k": k, "seconds": seconds, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
