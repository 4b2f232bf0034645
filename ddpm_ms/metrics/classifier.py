"""The feature extractor for FID: a small CNN classifier trained on Fashion-MNIST, MNIST
(28x28 grayscale) or CIFAR-10 (32x32 RGB) by scripts/train_classifier.py. Its penultimate
activations are the features; its softmax gives the Inception Score and the class histogram.

Inputs are images in [-1, 1], shaped (B, channels, size, size): the range the diffusion model produces.
"""
from __future__ import annotations

from mindspore import nn, ops

from ddpm_ms.models.layers import Conv2d, Dense

FEATURE_DIM = 128
NUM_CLASSES = 10


class _ConvBlock(nn.Cell):
    """conv 3x3 -> BatchNorm -> ReLU, twice, then 2x2 max-pooling."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1, self.norm1 = Conv2d(c_in, c_out, 3, padding=1, has_bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.norm2 = Conv2d(c_out, c_out, 3, padding=1, has_bias=False), nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2, 2)

    def construct(self, x):
        x = ops.relu(self.norm1(self.conv1(x)))
        x = ops.relu(self.norm2(self.conv2(x)))
        return self.pool(x)


class FeatureClassifier(nn.Cell):
    """28x28x1 -> 32 x 14x14 -> 64 x 7x7 -> flatten, dense -> 128 features (ReLU) -> 10 logits
    (for 32x32x3 images: 3 channels in, 64 x 8x8 before the dense layer)."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES,
                 dropout: float = 0.3, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the classifier halves the image twice: its size must divide by 4, got {image_size}")
        self.block1, self.block2 = _ConvBlock(in_channels, width), _ConvBlock(width, 2 * width)
        self.hidden = Dense(2 * width * (image_size // 4) ** 2, feature_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.head = Dense(feature_dim, num_classes)

    def features(self, x):
        """Penultimate activations (B, feature_dim): the FID feature space."""
        x = self.block2(self.block1(x))
        return ops.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def construct(self, x):
        return self.head(self.dropout(self.features(x)))

