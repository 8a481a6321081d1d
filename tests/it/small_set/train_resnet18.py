"""Trains a torchvision ResNet-18 on the small ImageFolder DATA (argv[1]) at input size 32 and saves
its state dict to OUT (argv[2]), as a user fine-tuning their own model would; prints the test
accuracy. Normalisation: ImageNet's mean and std (argv[3], argv[4], comma-separated).

One epoch of Adam (lr 1e-3, batch 32, seeded) learns the three colour classes; BatchNorm's running
statistics are then recomputed over the train set in one cumulative pass, so that eval mode sees
the statistics of the trained weights rather than the last batches' moving average.
"""
import sys

import torch
import torchvision
from torchvision import transforms

data, out = sys.argv[1], sys.argv[2]
mean = [float(v) for v in sys.argv[3].split(",")]
std = [float(v) for v in sys.argv[4].split(",")]
torch.manual_seed(0)
t = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
                        transforms.Normalize(mean, std)])
train = torchvision.datasets.ImageFolder(data + "/train", transform=t)
test = torchvision.datasets.ImageFolder(data + "/test", transform=t)
x = torch.stack([train[i][0] for i in range(len(train))])
y = torch.tensor(train.targets)
xt = torch.stack([test[i][0] for i in range(len(test))])
yt = torch.tensor(test.targets)

model = torchvision.models.resnet18(num_classes=len(train.classes))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
model.train()
perm = torch.randperm(len(x))
for i in range(0, len(x), 32):
    idx = perm[i:i + 32]
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
    opt.step()

batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
for m in batch_norms:
    m.reset_running_stats()
    m.momentum = None  # a cumulative average over the pass
with torch.no_grad():
    model(x)
for m in batch_norms:
    m.momentum = 0.1
model.eval()
with torch.no_grad():
    accuracy = (model(xt).argmax(1) == yt).double().mean().item()
torch.save(model.state_dict(), out)
print(accuracy)
