"""tvconv: the TVConv operator, its face backbones, data, training and profiling.

Importable on its own (torch + numpy); ``studies`` and ``analysis`` build on it.
"""

from tvconv import affinity
from tvconv.convert import (
    BiasedTVConv,
    DepthwiseSite,
    deploy,
    find_depthwise_sites,
    replace_depthwise,
)
from tvconv.ops import TVConv, TVConvDeploy, translation_variant_conv

# Bump when a change alters results (data, model, training, evaluation): it is part of every
# run_id, so records made by older code are never mixed with new ones.
# 4: the C++ core-op kernel (fused taps) changes float rounding. 5: the quick testbed: realistic
# synthetic faces (generator 5), the data seed from the run seed, shifts as fractions of the frame,
# channels-last training, floors in every face record.
RESULTS_VERSION = 5

from tvconv import models  # noqa: E402  (models import convert, which needs ops first)

__all__ = [
    "RESULTS_VERSION",
    "BiasedTVConv",
    "DepthwiseSite",
    "TVConv",
    "TVConvDeploy",
    "affinity",
    "deploy",
    "find_depthwise_sites",
    "models",
    "replace_depthwise",
    "translation_variant_conv",
]
