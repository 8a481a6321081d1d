"""What a user runs today: OpenOOD v1.5's post-hoc postprocessors, structured as OpenOOD writes
them (`setup` on the training features, `postprocess` per test batch of 200, torch and numpy on
the CPU), on the same features as the Rust side.

Written from docs/method.md#baseline-detectors and OpenOOD's postprocessor structure: the
training features are given (the network's forward passes are not timed on either side); where
OpenOOD calls faiss (KNN, NNGuide), which the set-up does not install, an exact search by one
matrix product and `topk` stands in. ODIN is left out: its cost is the network's.

Usage: reference_detectors.py FEATURES.safetensors [--threads T] [--batch 200]
Prints one JSON line: {"threads": T, "fit": {name: seconds}, "score": {name: seconds}}.
"""
import json
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file

args = sys.argv[1:]
path = args[0]
threads = int(args[args.index("--threads") + 1]) if "--threads" in args else 2
batch = int(args[args.index("--batch") + 1]) if "--batch" in args else 200
torch.set_num_threads(threads)
case = load_file(path)
train = torch.from_numpy(case["train"])
labels = torch.from_numpy(case["labels"])
test = torch.from_numpy(case["test"])
W = torch.from_numpy(case["weight"])
b = torch.from_numpy(case["bias"])
C = W.shape[0]


def fc(feature):
    return feature @ W.T + b


def empirical_precision(x):
    # sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(x).precision_
    x = x - x.mean(0)
    return np.linalg.pinv(x.T @ x / len(x), hermitian=True)


def top_k(feature, percentile):
    n = feature.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    return torch.topk(feature, k, dim=1)


def scale_rows(x, percentile, prune):
    s1 = x.sum(1)
    v, i = top_k(x, percentile)
    pruned = torch.zeros_like(x).scatter_(1, i, v)
    s2 = pruned.sum(1)
    return (pruned if prune else x) * torch.exp(s1 / s2)[:, None]


class Logits:
    def __init__(self, f):
        self.f = f

    def setup(self):
        pass

    def postprocess(self, feature):
        return self.f(fc(feature))


class Knn:
    def setup(self):
        self.bank = torch.nn.functional.normalize(train, dim=1)

    def postprocess(self, feature):
        z = torch.nn.functional.normalize(feature, dim=1)
        d = (2 - 2 * z @ self.bank.T).clamp_min(0)
        return -torch.topk(d, 50, dim=1, largest=False)[0][:, -1].sqrt()


class Vim:
    def setup(self):
        w, bias = W.double().numpy(), b.double().numpy()
        self.u = -np.matmul(np.linalg.pinv(w), bias)
        x = train.double().numpy() - self.u
        cov = x.T @ x / len(x)
        eig_vals, eigen_vectors = np.linalg.eig(cov)
        dim = train.shape[1] // 2
        self.NS = np.ascontiguousarray(
            (eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T).real
        vlogit = np.linalg.norm(x @ self.NS, axis=-1)
        self.alpha = (train.double().numpy() @ w.T + bias).max(axis=-1).mean() / vlogit.mean()

    def postprocess(self, feature):
        f = feature.double().numpy()
        logit = f @ W.double().numpy().T + b.double().numpy()
        energy = torch.logsumexp(torch.from_numpy(logit), dim=1).numpy()
        vlogit = np.linalg.norm((f - self.u) @ self.NS, axis=-1) * self.alpha
        return torch.from_numpy(energy - vlogit)


class Rmds:
    def setup(self):
        means = torch.stack([train[labels == c].mean(0) for c in range(C)])
        self.class_mean = means
        self.precision = torch.from_numpy(
            empirical_precision((train - means[labels]).numpy())).float()
        self.whole_mean = train.mean(0)
        self.whole_precision = torch.from_numpy(
            empirical_precision((train - self.whole_mean).numpy())).float()

    def postprocess(self, feature):
        t1 = feature - self.whole_mean
        background = -torch.matmul(torch.matmul(t1, self.whole_precision), t1.t()).diag()
        scores = torch.zeros((feature.shape[0], C))
        for c in range(C):
            t = feature - self.class_mean[c]
            scores[:, c] = -torch.matmul(torch.matmul(t, self.precision), t.t()).diag()
            scores[:, c] = scores[:, c] - background
        return scores.max(1)[0]


class React:
    def setup(self):
        self.threshold = np.percentile(train.numpy().flatten(), 90)

    def postprocess(self, feature):
        return torch.logsumexp(fc(feature.clip(max=self.threshold)), dim=1)


class Ash:
    def setup(self):
        pass

    def postprocess(self, feature):
        return torch.logsumexp(fc(scale_rows(feature, 90, True)), dim=1)


class Scale:
    def setup(self):
        pass

    def postprocess(self, feature):
        return torch.logsumexp(fc(scale_rows(feature, 85, False)), dim=1)


class Gen:
    def setup(self):
        pass

    def postprocess(self, feature):
        p = torch.softmax(fc(feature), dim=1)
        p = torch.sort(p, dim=1)[0][:, -min(100, C):]
        return -torch.sum(p ** 0.1 * (1 - p) ** 0.1, dim=1)


class Fdbd:
    def setup(self):
        self.train_mean = train.mean(0)
        w = W.numpy()
        m = np.zeros((C, C))
        for p in range(C):
            d = np.linalg.norm(w - w[p, :], axis=1)
            d[p] = 1
            m[p, :] = d
        self.denominator = torch.tensor(m)

    def postprocess(self, feature):
        output = fc(feature)
        values, nn_idx = output.max(1)
        sub = torch.abs(output - values.repeat(C, 1).T)
        return torch.sum(sub / self.denominator[nn_idx], axis=1) / torch.norm(
            feature - self.train_mean, dim=1)


class Nnguide:
    def setup(self):
        bank = train[: max(1, int(np.ceil(0.01 * len(train))))]
        feas = torch.nn.functional.normalize(bank, dim=1)
        self.guide = feas * torch.logsumexp(fc(bank), dim=1)[:, None]
        self.k = min(100, len(bank))

    def postprocess(self, feature):
        z = torch.nn.functional.normalize(feature, dim=1)
        conf = torch.topk(z @ self.guide.T, self.k, dim=1)[0].mean(1)
        return conf * torch.logsumexp(fc(feature), dim=1)


detectors = {
    "msp": Logits(lambda f: torch.softmax(f, dim=1).max(1)[0]),
    "energy": Logits(lambda f: torch.logsumexp(f, dim=1)),
    "maxlogit": Logits(lambda f: f.max(1)[0]),
    "knn": Knn(), "vim": Vim(), "rmds": Rmds(), "react": React(), "ash": Ash(),
    "scale": Scale(), "gen": Gen(), "fdbd": Fdbd(), "nnguide": Nnguide(),
}
fit, score = {}, {}
with torch.no_grad():
    for name, d in detectors.items():
        start = time.perf_counter()
        d.setup()
        fit[name] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, len(test), batch):
            d.postprocess(test[i:i + batch])
        score[name] = time.perf_counter() - start
print(json.dumps({"threads": threads, "fit": fit, "score": score}))
