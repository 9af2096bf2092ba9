"""Model zoo: the paper's face backbones behind a small registry (``create``, ``list_models``)."""

from tvconv.models import mobilenetv2, shufflenetv2
from tvconv.models._registry import ATOMS, TVCONV_OPTIONS, create, list_models, register_model
from tvconv.models.heads import AMSoftmax, EmbeddingHead

__all__ = [
    "ATOMS",
    "TVCONV_OPTIONS",
    "AMSoftmax",
    "EmbeddingHead",
    "create",
    "list_models",
    "mobilenetv2",
    "register_model",
    "shufflenetv2",
]
