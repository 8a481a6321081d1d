"""Writes the own-model test fixture into OUT (argv[1]); argv[2] is the scripts/ folder.

- data/{train,test}/{ant,bee,cat}/*.png: an ImageFolder data set of random images of mixed sizes
  and modes (L, LA, RGB, RGBA, P); ood/: 44 more such images; empty/: no images.
- model.pt + model.json: a torchvision ResNet-18 (3 classes, random weights, BatchNorm statistics
  perturbed) exported at input size 64 with scripts/export_torchscript.py.
- no_features.pt + .json: the same network scripted without feature_list.
- fixed.pt + fixed.json: a network that only takes 32x32 inputs (flatten + linear).
- ref_test_layer{l}.npy: PyTorch's mean-pooled features of the test split (torchvision's ImageFolder
  with Resize(64), CenterCrop(64), ToTensor, Normalize), taken with forward hooks on the eager model.
- ref_x.npy, ref_mu.npy, ref_grad.npy: 8 normalised test images, class centres of layer 2 and the
  autograd gradient of the pre-processing loss: mean over rows of -max_c(-|f - mu_c|^2 / 2).
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

out, scripts = sys.argv[1], sys.argv[2]
sys.path.insert(0, scripts)
from export_torchscript import export  # noqa: E402

rng = np.random.default_rng(7)
CLASSES = ["ant", "bee", "cat"]
MODES = ["L", "LA", "RGB", "RGBA", "P"]
MEAN, STD = [0.45, 0.5, 0.55], [0.22, 0.25, 0.2]


def random_image(i, tint):
    w, h = (int(v) for v in rng.integers(36, 97, size=2))
    base = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    ramp = np.linspace(0, 1, w)[None, :, None] * np.array(tint)[None, None, :]
    img = Image.fromarray(np.clip(0.6 * base + 100 * ramp, 0, 255).astype(np.uint8), "RGB")
    mode = MODES[i % len(MODES)]
    if mode == "P":
        return img.quantize(colors=16)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w)).astype(np.uint8), "L")
        img.putalpha(alpha)
        return img
    return img.convert(mode) if mode != "RGB" else img


def save_set(folder, count, tint, start):
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        random_image(start + i, tint).save(os.path.join(folder, "img_%03d.png" % i))


for c, name in enumerate(CLASSES):
    tint = [1.0 if j == c else 0.0 for j in range(3)]
    save_set(os.path.join(out, "data", "train", name), 16, tint, c)
    save_set(os.path.join(out, "data", "test", name), 14, tint, c + 1)
save_set(os.path.join(out, "ood"), 44, [-1.0, -1.0, -1.0], 0)
os.makedirs(os.path.join(out, "empty", "sub"), exist_ok=True)

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=3)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
            m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
            m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
            m.bias.copy_(0.1 * torch.randn_like(m.bias))
model.eval()
export(model, os.path.join(out, "model.pt"), ["relu", "layer1", "layer2", "layer3", "layer4"],
       64, MEAN, STD, CLASSES, dataset="toy", name="resnet18")

# Without feature_list: a plain scripted classifier with a valid sidecar.
torch.jit.save(torch.jit.script(model), os.path.join(out, "no_features.pt"))
with open(os.path.join(out, "model.json")) as f:
    sidecar = json.load(f)
with open(os.path.join(out, "no_features.json"), "w") as f:
    json.dump(sidecar, f)


class Fixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 32 * 32, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


export(Fixed(), os.path.join(out, "fixed.pt"), ["conv"], 32, MEAN, STD, CLASSES, name="fixed")

# PyTorch's features of the test split, with hooks on the eager model.
transform = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                                transforms.Normalize(MEAN, STD)])
test = torchvision.datasets.ImageFolder(os.path.join(out, "data", "test"), transform=transform)
x = torch.stack([test[i][0] for i in range(len(test))])
taps = [model.relu, model.layer1, model.layer2, model.layer3, model.layer4]
captured = []
hooks = [m.register_forward_hook(lambda mod, inp, o: captured.append(o)) for m in taps]
with torch.no_grad():
    model(x)
for h in hooks:
    h.remove()
for l, a in enumerate(captured):
    np.save(os.path.join(out, "ref_test_layer%d.npy" % l), a.mean(dim=(2, 3)).numpy())

# The pre-processing gradient at layer 2.
x8 = x[:8].clone().requires_grad_(True)
captured.clear()
hook = model.layer2.register_forward_hook(lambda mod, inp, o: captured.append(o))
model(x8)
hook.remove()
f = captured[0].mean(dim=(2, 3))
mu = torch.randn(3, f.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float32)
scores = -0.5 * ((f[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
best = scores.argmax(1, keepdim=True)
loss = -scores.gather(1, best).mean()
(grad,) = torch.autograd.grad(loss, x8)
np.save(os.path.join(out, "ref_x.npy"), x8.detach().numpy())
np.save(os.path.join(out, "ref_mu.npy"), mu.numpy())
np.save(os.path.join(out, "ref_grad.npy"), grad.numpy())
print(len(test))
