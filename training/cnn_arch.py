"""The two end-to-end CNN baselines of the paper: ResNet-18 and VGG-16 with one log-risk output.

Both modules take (B, 3, H, W) float images in [0, 1], normalise them with the ImageNet
statistics, and return (B,) log relative hazards (a Linear(512, 1) without bias: a Cox model
has no intercept). Written here because the pinned CPU torch has no matching torchvision.

Every network is split in two for training: `frozen_features(x)` (what does not learn; for
ResNet-18 only the normalisation) and `top(h)` (the rest). `forward(x) == top(frozen_features(x))`.
A caller may compute `frozen_features` once per image and train `top` on the cached tensors.

- `ResNet18Cox`: He et al. 2016, BasicBlock [2, 2, 2, 2] with BatchNorm, trained from scratch
  (Kaiming-normal convolutions, BatchNorm at weight 1 / bias 0).
- `VGG16Cox`: Simonyan & Zisserman 2015 configuration "D" (13 3x3 convolutions in five blocks,
  each block closed by a 2x2 max-pool), then global average pooling, dropout and the linear
  head. Its convolutions start from the real ImageNet VGG-16 that `make install` puts in the
  environment for the perceptual loss, handed in by the caller (`init_convs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet's statistics and VGG-16's layout, as torchvision's VGG-16 (and embedding.perceptual's
# trunk) has them; training/ may not import embedding/, so the few constants are restated here.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

ARCHS = ("resnet18", "vgg16")
# Smallest input side each network accepts: ResNet-18 downsamples by 32 but its last stages
# still run on 1x1 maps; VGG-16's five floor-mode pools need 32 pixels to leave one.
MIN_IMAGE_SIZE = {"resnet18": 16, "vgg16": 32}
VGG16_BLOCKS = 5


class ImageNetNormalize(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (x - mean) / std with the statistics both networks expect."""

    mean: torch.Tensor  # buffers, not saved: they are constants of the code
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CoxCNN(nn.Module):
    """Common interface: forward(x) = top(frozen_features(x)) -> (B,) log-risk."""

    arch = "base"

    @property
    def n_frozen_blocks(self) -> int:
        """How many lower blocks do not learn (their output may be cached)."""
        return 0

    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def top(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.frozen_features(x))


# -- ResNet-18 ---------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1-projected) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNet18Cox(CoxCNN):
    """ResNet-18 -> (B,) log-risk; about 11.18M parameters. Input (B, 3, H, W) in [0, 1], H, W >= 16."""

    arch = "resnet18"

    def __init__(self) -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        layers = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)))
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)   # nothing is frozen: the whole network learns

    def top(self, h: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(h))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)).squeeze(1)


# -- VGG-16 ------------------------------------------------------------------------------------

def _vgg16_blocks() -> list[nn.Sequential]:
    """Five blocks of (conv 3x3 + ReLU) x {2, 2, 3, 3, 3}, each closed by a 2x2 max-pool."""
    blocks: list[nn.Sequential] = []
    current: list[nn.Module] = []
    in_ch = 3
    for v in (*_VGG16_CFG, "M"):   # the perceptual trunk stops at relu5_3; the classifier net pools once more
        if v == "M":
            current.append(nn.MaxPool2d(2, stride=2))
            blocks.append(nn.Sequential(*current))
            current = []
        else:
            current += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU()]
            in_ch = int(v)
    return blocks


class VGG16Cox(CoxCNN):
    """VGG-16 -> global average pool -> dropout -> Linear(512, 1) -> (B,) log-risk.

    Input (B, 3, H, W) in [0, 1], H, W >= 32. `trainable_blocks` (1..5) counts conv blocks
    from the top: 5 trains everything end to end, 1 trains only conv5_1..conv5_3 and the
    head. The lower blocks are frozen: no gradients, always in eval mode, run under no_grad.
    `init_convs`: the 13 (weight, bias) pairs to start from, conv1_1 first (the flows pass
    the installed ImageNet VGG-16's, embedding.perceptual.imagenet_vgg16_convs); None: random
    Kaiming init (a saved model, whose weights are loaded next, or a test).
    """

    arch = "vgg16"

    def __init__(self, *, trainable_blocks: int = VGG16_BLOCKS, dropout: float = 0.5,
                 init_convs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        super().__init__()
        if not 1 <= trainable_blocks <= VGG16_BLOCKS:
            raise ValueError(f"trainable_blocks must be 1..{VGG16_BLOCKS}, got {trainable_blocks}")
        self.trainable_blocks = int(trainable_blocks)
        self.normalize = ImageNetNormalize()
        self.blocks = nn.ModuleList(_vgg16_blocks())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, 1, bias=False)
        convs = self.convs()
        if init_convs is not None:
            if len(init_convs) != len(convs):
                raise ValueError(f"init_convs must hold {len(convs)} (weight, bias) pairs, got {len(init_convs)}")
            with torch.no_grad():
                for conv, (w, b) in zip(convs, init_convs, strict=True):
                    conv.weight.copy_(w)
                    cast(torch.Tensor, conv.bias).copy_(b)   # VGG convolutions have biases
        else:
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(cast(torch.Tensor, conv.bias))
        for block in self.blocks[:self.n_frozen_blocks]:
            block.requires_grad_(False)
        self.train()

    @property
    def n_frozen_blocks(self) -> int:
        return VGG16_BLOCKS - self.trainable_blocks

    def convs(self) -> list[nn.Conv2d]:
        """The 13 convolutions, conv1_1 .. conv5_3."""
        return [m for m in self.blocks.modules() if isinstance(m, nn.Conv2d)]

    def train(self, mode: bool = True) -> VGG16Cox:
        super().train(mode)
        for block in self.blocks[:self.n_frozen_blocks]:
            block.eval()   # frozen blocks never switch to training behaviour
        return self

    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        with torch.no_grad():
            for block in self.blocks[:self.n_frozen_blocks]:
                h = block(h)
        return h

    def top(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[self.n_frozen_blocks:]:
            h = block(h)
        h = self.dropout(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
        return self.fc(h).squeeze(1)


def build_cnn(arch: str, *, trainable_blocks: int = VGG16_BLOCKS, dropout: float = 0.5,
              init_convs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> CoxCNN:
    """A fresh network of `arch` ("resnet18" | "vgg16"); the vgg16-only options are ignored for resnet18."""
    if arch == "resnet18":
        return ResNet18Cox()
    if arch == "vgg16":
        return VGG16Cox(trainable_blocks=trainable_blocks, dropout=dropout, init_convs=init_convs)
    raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
