"""What a user runs today: scoring with input pre-processing structured like the reference's code.

Written from `docs/method.md#input-pre-processing`, `docs/method.md#the-mahalanobis-detector` and
the reference's loops: `lib_generation.get_resflow_score` (driven by
`Residual_flow_test_processing.py`: for each layer, for each magnitude, for each batch) and
`lib_generation.get_Mahalanobis_score` (driven by `OOD_Generate_Mahalanobis.py`: for each
magnitude, for each layer, for each batch). Per batch, as the reference does for every magnitude
(0 included): `intermediate_forward` up to the layer on an input that requires grad, mean-pool,
the class scores, the loss of the best class, `loss.backward()` (the network's and the flows'
parameters require grad, as in the reference, so their gradients are computed too), the sign step
divided channel by channel by the normalisation std, a second forward without gradients on the
perturbed input, the class scores again.

- Residual flow: one RealNVP per class (the tests' transcription of the reference's module,
  tests/it/flow_ref/realnvp.py, built by `new_flow` of benches/reference_flow_train.py); the
  scores are `flow[c].log_prob(f - mu_c)` class by class, the loss uses each class's flow on the
  rows predicted as that class.
- Mahalanobis: `-0.5 * diag((f - mu_c) P (f - mu_c)^T)` class by class, with a tied precision P.

The network is the reference's ResNet-34 (scripts/reference_models.py) at the given width with
random weights, in eval mode; inputs, class means, precision, whitening and flows are random (the
timing does not depend on their values). Data loading and the reference's per-sample text output
are left out.

Usage: reference_scoring.py [--width W] [--classes C] [--layers 0,1,2,3,4] [--images N]
       [--flow-batch 32] [--maha-batch 20] [--threads T] [--detectors resflow,mahalanobis]
Each detector scores max(1, N // batch) batches of its batch size (flow: 32, Residual_flow_test_
processing.py's default; Mahalanobis: 20, OOD_Generate_Mahalanobis.py's default) at every layer
and magnitude, after an untimed warm-up (one magnitude, every layer, 4 images). Prints one JSON
line: {"threads": T, "resflow": {"batch", "images", "seconds", "seconds_per_image"},
"mahalanobis": {...}}.
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, HERE)
import reference_models  # noqa: E402
from reference_flow_train import new_flow  # noqa: E402  (imports tests/it/flow_ref/realnvp.py)

MAGNITUDES = [0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005]
STD = (0.2023, 0.1994, 0.2010)


def sign_step(data, std):
    """The reference's gradient sign, each channel divided by its normalisation std."""
    gradient = torch.ge(data.grad.data, 0)
    gradient = (gradient.float() - 0.5) * 2
    for channel, s in enumerate(std):
        index = torch.LongTensor([channel])
        gradient.index_copy_(1, index, gradient.index_select(1, index) / s)
    return gradient


def pooled(model, x, layer):
    out = model.intermediate_forward(x, layer)
    out = out.view(out.size(0), out.size(1), -1)
    return torch.mean(out, 2)


def resflow_score(model, loader, layer, num_classes, sample_class_mean_layer, flow, magnitude):
    """lib_generation.get_resflow_score."""
    score_vec = []
    for data in loader:
        data = data.clone().requires_grad_(True)
        out_features = pooled(model, data, layer)
        resflow_score = 0
        for i in range(num_classes):
            zero_f = out_features.data - sample_class_mean_layer[i]
            score = flow[i].log_prob(zero_f)
            resflow_score = score.view(-1, 1) if i == 0 else torch.cat((resflow_score, score.view(-1, 1)), 1)
        # Input processing
        sample_pred = resflow_score.max(1)[1]
        pure_score = 0
        for i in range(num_classes):
            zero_f = out_features[sample_pred == i, :] - sample_class_mean_layer[i]
            score = flow[i].log_prob(zero_f)
            pure_score = score if i == 0 else torch.cat((pure_score, score), 0)
        loss = torch.mean(-pure_score)
        loss.backward()
        gradient = sign_step(data, STD)
        temp_inputs = torch.add(data.data, gradient, alpha=-magnitude)
        with torch.no_grad():  # the reference's Variable(..., volatile=True)
            noise_out_features = pooled(model, temp_inputs, layer)
            noise_resflow_score = 0
            for i in range(num_classes):
                zero_f = noise_out_features.data - sample_class_mean_layer[i]
                score = flow[i].log_prob(zero_f)
                noise_resflow_score = (
                    score.view(-1, 1) if i == 0 else torch.cat((noise_resflow_score, score.view(-1, 1)), 1)
                )
        score_vec.extend(noise_resflow_score.detach().cpu().numpy())
    return score_vec


def mahalanobis_score(model, loader, num_classes, sample_mean, precision, layer_index, magnitude):
    """lib_generation.get_Mahalanobis_score."""
    mahalanobis = []
    for data in loader:
        data = data.clone().requires_grad_(True)
        out_features = pooled(model, data, layer_index)
        gaussian_score = 0
        for i in range(num_classes):
            zero_f = out_features.data - sample_mean[layer_index][i]
            term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision[layer_index]), zero_f.t()).diag()
            gaussian_score = term_gau.view(-1, 1) if i == 0 else torch.cat((gaussian_score, term_gau.view(-1, 1)), 1)
        # Input processing
        sample_pred = gaussian_score.max(1)[1]
        batch_sample_mean = sample_mean[layer_index].index_select(0, sample_pred)
        zero_f = out_features - batch_sample_mean
        pure_gau = -0.5 * torch.mm(torch.mm(zero_f, precision[layer_index]), zero_f.t()).diag()
        loss = torch.mean(-pure_gau)
        loss.backward()
        gradient = sign_step(data, STD)
        temp_inputs = torch.add(data.data, gradient, alpha=-magnitude)
        with torch.no_grad():  # the reference's Variable(..., volatile=True)
            noise_out_features = pooled(model, temp_inputs, layer_index)
            noise_gaussian_score = 0
            for i in range(num_classes):
                zero_f = noise_out_features.data - sample_mean[layer_index][i]
                term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision[layer_index]), zero_f.t()).diag()
                noise_gaussian_score = (
                    term_gau.view(-1, 1)
                    if i == 0
                    else torch.cat((noise_gaussian_score, term_gau.view(-1, 1)), 1)
                )
        noise_gaussian_score, _ = torch.max(noise_gaussian_score, dim=1)
        mahalanobis.extend(noise_gaussian_score.cpu().numpy())
    return mahalanobis


def batches(images, batch):
    """What the reference's DataLoader yields: max(1, images // batch) batches of normalised images."""
    return [torch.randn(batch, 3, 32, 32) for _ in range(max(1, images // batch))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--layers", default="0,1,2,3,4")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--flow-batch", type=int, default=32)
    parser.add_argument("--maha-batch", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detectors", default="resflow,mahalanobis")
    parser.add_argument("--magnitudes", default=",".join(str(m) for m in MAGNITUDES),
                        help="comma-separated; one magnitude is a deployed detector's work")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [int(v) for v in args.layers.split(",")]
    detectors = args.detectors.split(",")
    num_classes = args.classes

    model = reference_models.ResNet34(num_classes, args.width)
    model.eval()
    with torch.no_grad():
        dims = [f.size(1) for f in model.feature_list(torch.randn(2, 3, 32, 32))[1]]

    # Per layer: class means, tied precision (pseudo-inverse of a covariance), one flow per class.
    sample_mean, precision, flows = {}, {}, {}
    for layer in layers:
        d = dims[layer]
        sample_mean[layer] = torch.randn(num_classes, d)
        features = torch.randn(4 * d, d)
        precision[layer] = torch.linalg.pinv(features.t() @ features / features.size(0))
        if "resflow" in detectors:
            a_inv = torch.linalg.qr(torch.randn(d, d))[0]
            perms = [torch.randperm(d) for _ in range(5)]
            flows[layer] = [new_flow(a_inv, perms).eval() for _ in range(num_classes)]

    def run_resflow(loader, magnitudes):
        for layer in layers:
            for magnitude in magnitudes:
                resflow_score(model, loader, layer, num_classes, sample_mean[layer], flows[layer], magnitude)

    def run_mahalanobis(loader, magnitudes):
        for magnitude in magnitudes:
            for layer in layers:
                mahalanobis_score(model, loader, num_classes, sample_mean, precision, layer, magnitude)

    out = {"threads": torch.get_num_threads()}
    for name, run, batch in (
        ("resflow", run_resflow, args.flow_batch),
        ("mahalanobis", run_mahalanobis, args.maha_batch),
    ):
        if name not in detectors:
            continue
        run(batches(4, 4), [0.01])  # warm-up
        loader = batches(args.images, batch)
        start = time.perf_counter()
        run(loader, [float(m) for m in args.magnitudes.split(",")])
        seconds = time.perf_counter() - start
        images = len(loader) * batch
        out[name] = {"batch": batch, "images": images, "seconds": seconds, "seconds_per_image": seconds / images}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
