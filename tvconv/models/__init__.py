"""Model zoo: the paper's face backbones and its DeepLabV3+ segmenter behind a small registry
(``create``, ``list_models``)."""

from tvconv.models import mobilenetv2, seg, shufflenetv2
from tvconv.models._registry import (
    ATOMS,
    TVCONV_OPTIONS,
    check_buildable,
    create,
    list_models,
    model_atoms,
    model_task,
    register_model,
)
from tvconv.models.heads import AMSoftmax, EmbeddingHead

__all__ = [
    "ATOMS",
    "TVCONV_OPTIONS",
    "AMSoftmax",
    "EmbeddingHead",
    "check_buildable",
    "create",
    "list_models",
    "mobilenetv2",
    "model_atoms",
    "model_task",
    "register_model",
    "seg",
    "shufflenetv2",
]
