"""What a user runs today: flow training structured like the reference's Residual_flow_train.py.

Written from SPEC sections 4-5: one RealNVP module per class (full k x h products with
multiplicative masks, weight-normalised rescale, zero-initialised last layers), one torch.optim.Adam
per class (lr 1e-5), one shuffled DataLoader per class (batch 256), loss = -sum of log p over the
batch, one iteration = every class's train pass then its validation pass.

Usage: reference_flow_train.py K ITERATIONS THREADS [CLASSES TRAIN VALIDATION]
Prints one JSON line: {"k": K, "seconds": [per timed iteration], "threads": N}. The first iteration
is a warm-up and not timed. Features are random (the timing does not depend on their values).
"""
import json
import math
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self, k, h, with_rescale):
        super().__init__()
        self.fc1 = nn.Linear(k, h)
        self.fc2 = nn.Linear(h, h)
        self.fc3 = nn.Linear(h, k)
        nn.init.zeros_(self.fc3.weight)
        nn.init.zeros_(self.fc3.bias)
        self.with_rescale = with_rescale
        if with_rescale:
            self.weight_g = nn.Parameter(torch.full((1, 1), math.sqrt(k)))
            self.weight_v = nn.Parameter(torch.ones(1, k))

    def forward(self, x):
        x = F.leaky_relu(self.fc1(x))
        x = F.leaky_relu(self.fc2(x))
        x = self.fc3(x)
        if self.with_rescale:
            return torch._weight_norm(self.weight_v, self.weight_g, 0) * torch.tanh(x)
        return x


class RealNVP(nn.Module):
    def __init__(self, a_inv, perms):
        super().__init__()
        k = a_inv.shape[0]
        h = k  # length_hidden = 1
        half = k // 2
        right = torch.cat([torch.zeros(half), torch.ones(k - half)])
        masks = torch.stack([right if i % 2 == 0 else 1 - right for i in range(10)])
        self.register_buffer("mask", masks)
        self.register_buffer("A_", a_inv)
        self.perms = perms
        self.t = nn.ModuleList([Net(k, h, False) for _ in range(10)])
        self.s = nn.ModuleList([Net(k, h, True) for _ in range(10)])

    def log_prob(self, x):
        z = torch.mm(self.A_, x.t()).t()
        ld = torch.zeros(x.shape[0])
        for i in reversed(range(10)):
            z_ = self.mask[i] * z
            s = self.s[i](z_) * (1 - self.mask[i])
            t = self.t[i](z_) * (1 - self.mask[i])
            z = (1 - self.mask[i]) * (z - t) * torch.exp(-s) + z_
            ld = ld - s.sum(dim=1)
            if i % 2 == 0:
                z = z[:, self.perms[i // 2]]
        return -0.5 * z.size(1) * math.log(2 * math.pi) - 0.5 * (z ** 2).sum(dim=1) + ld


def main():
    k, iterations, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    classes, train, validation = (int(v) for v in (sys.argv[4:7] or (10, 4000, 1000)))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    a_inv = torch.linalg.qr(torch.randn(k, k))[0]
    perms = [torch.randperm(k) for _ in range(5)]
    flows, opts, loaders, val_loaders = [], [], [], []
    for _ in range(classes):
        flow = RealNVP(a_inv, perms)
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
