"""PyTorch definitions of the reference classifiers, with the reference's module tree and names.

Equivalent to `models/resnet.py` (ResNet-34, BasicBlock [3,4,6,3]) and `models/densenet.py`
(`DenseNet3`, DenseNet-BC) of the deep_Mahalanobis_detector repository, which the Residual Flow
code uses unchanged, with one addition: a width parameter (ResNet base width, DenseNet growth
rate) so small networks can be tested. The class names match the reference's so that pickled
whole modules can be mapped onto them (see convert_weights.py).

Used by the parity test (tests/models_parity.rs) and by the weight converter.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

RESNET_BLOCKS = (3, 4, 6, 3)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (conv1x1+BN where the shape changes) shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs; feature layers: stem, layer1, layer2, layer3, layer4."""

    def __init__(self, block=BasicBlock, num_blocks=RESNET_BLOCKS, num_classes=10, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes_in = width
        for i, count in enumerate(num_blocks):
            planes = width * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(planes_in, planes, 2 if (i > 0 and j == 0) else 1))
                planes_in = planes
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.linear = nn.Linear(planes_in, num_classes)

    def _stages(self):
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def _head(self, out):
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))

    def forward(self, x):
        return self.feature_list(x)[0]

    def feature_list(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        feats = [out]
        for stage in self._stages():
            out = stage(out)
            feats.append(out)
        return self._head(out), feats

    def intermediate_forward(self, x, layer_index):
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self._stages()[:layer_index]:
            out = stage(out)
        return out


def ResNet34(num_c, width=64):
    return ResNet(BasicBlock, RESNET_BLOCKS, num_classes=num_c, width=width)


class BottleneckBlock(nn.Module):
    """BN-ReLU-conv1x1 (4g) - BN-ReLU-conv3x3 (g), concatenated to the input."""

    def __init__(self, in_planes, out_planes, dropRate=0.0):
        super().__init__()
        inter = 4 * out_planes
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, inter, 1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, out_planes, 3, stride=1, padding=1, bias=False)
        self.droprate = dropRate

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class TransitionBlock(nn.Module):
    """BN-ReLU-conv1x1, then 2x2 average pooling."""

    def __init__(self, in_planes, out_planes, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 1, stride=1, padding=0, bias=False)
        self.droprate = dropRate

    def forward(self, x):
        return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)


class DenseBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, growth_rate, block, dropRate=0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[block(in_planes + i * growth_rate, growth_rate, dropRate) for i in range(int(nb_layers))]
        )

    def forward(self, x):
        return self.layer(x)


class DenseNet3(nn.Module):
    """DenseNet-BC; feature layers: conv1, block1+trans1, block2+trans2, block3+bn1+ReLU."""

    def __init__(self, depth, num_classes, growth_rate=12, reduction=0.5, bottleneck=True, dropRate=0.0):
        super().__init__()
        assert bottleneck, "only the bottleneck variant is used"
        n = int((depth - 4) / 3 / 2)
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, 3, stride=1, padding=1, bias=False)
        self.block1 = DenseBlock(n, planes, growth_rate, BottleneckBlock)
        planes += n * growth_rate
        self.trans1 = TransitionBlock(planes, int(math.floor(planes * reduction)))
        planes = int(math.floor(planes * reduction))
        self.block2 = DenseBlock(n, planes, growth_rate, BottleneckBlock)
        planes += n * growth_rate
        self.trans2 = TransitionBlock(planes, int(math.floor(planes * reduction)))
        planes = int(math.floor(planes * reduction))
        self.block3 = DenseBlock(n, planes, growth_rate, BottleneckBlock)
        planes += n * growth_rate
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(planes, num_classes)
        self.in_planes = planes

    def _stages(self):
        return [
            lambda o: self.trans1(self.block1(o)),
            lambda o: self.trans2(self.block2(o)),
            lambda o: self.relu(self.bn1(self.block3(o))),
        ]

    def forward(self, x):
        return self.feature_list(x)[0]

    def feature_list(self, x):
        out = self.conv1(x)
        feats = [out]
        for stage in self._stages():
            out = stage(out)
            feats.append(out)
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.in_planes)), feats

    def intermediate_forward(self, x, layer_index):
        out = self.conv1(x)
        for stage in self._stages()[:layer_index]:
            out = stage(out)
        return out


def build(net_type, width, num_classes):
    """The network `net_type` ("resnet" or "densenet") with the given width and classes."""
    if net_type == "resnet":
        return ResNet34(num_classes, width)
    if net_type == "densenet":
        return DenseNet3(100, num_classes, growth_rate=width)
    raise ValueError("unknown net type %r" % net_type)
