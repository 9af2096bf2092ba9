"""Face-model heads: the 512-d embedding head of both backbones and the AM-Softmax loss head.

EmbeddingHead follows the official face models: BN2d -> dropout (if > 0) -> global average pool
-> Linear(C -> embedding) -> BN1d. AMSoftmax is additive-margin softmax (Wang et al., 2018):
logits = s * (cos(theta) - m * onehot), on L2-normalised embeddings and class weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    def __init__(self, channels: int, embedding_size: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        number = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
        if not number or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.norm = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, embedding_size)
        self.embedding_norm = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.norm(x))  # (N, C, h, w)
        x = x.mean(dim=(2, 3))  # (N, C): average pool over the whole final map
        return self.embedding_norm(self.fc(x))  # (N, embedding_size)


class AMSoftmax(nn.Module):
    """Additive-margin softmax head; returns logits for ``nn.CrossEntropyLoss``.

    Without labels (evaluation) the logits carry no margin: ``scale * cos(theta)``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: float = 0.35,
        scale: float = 32.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"AMSoftmax needs at least 2 classes, got {num_classes}")
        self.margin = margin
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).uniform_(-1, 1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1, 1)
        if labels is not None:
            num_classes = self.weight.shape[0]
            if labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(
                    f"labels must lie in [0, {num_classes - 1}], "
                    f"got range [{int(labels.min())}, {int(labels.max())}]"
                )
            cosine = cosine - self.margin * F.one_hot(labels, num_classes).to(cosine.dtype)
        return self.scale * cosine  # (N, num_classes)

    def extra_repr(self) -> str:
        classes, dim = self.weight.shape
        return f"{dim} -> {classes} classes, margin={self.margin}, scale={self.scale}"
