"""latentmotion: motion in the latent space of CNNs, for collaborative intelligence.

Reproduces and extends Ulhaq & Bajić, "Analysis of latent-space motion for
collaborative intelligence" (ICASSP 2021): split a CNN into edge and cloud,
move images and, scaled by the layer's stride (Eq. 12), feature tensors;
measure NRMSE (Eq. 13, 14); estimate motion by block matching; code feature
sequences with motion-compensated prediction. Conventions: see
:mod:`latentmotion.motion`.
"""

from .estimation import block_match
from .errors import InputError, LatentMotionError, UnknownNameError, WeightsUnavailableError
from .metrics import hevc_band, nrmse, nrmse_from_psnr, psnr, psnr_from_nrmse
from .models import ImageNetModel, LayerInfo, Split, list_layers, list_models, load_model, split_model
from .motion import Affine, FramePair, Warped, flow_from_affine, interior_mask, predict_features, render_pair, warp_image

__version__ = "0.1.0"

__all__ = [
    "Affine",
    "FramePair",
    "ImageNetModel",
    "InputError",
    "LatentMotionError",
    "LayerInfo",
    "Split",
    "UnknownNameError",
    "Warped",
    "WeightsUnavailableError",
    "block_match",
    "flow_from_affine",
    "hevc_band",
    "interior_mask",
    "list_layers",
    "list_models",
    "load_model",
    "nrmse",
    "nrmse_from_psnr",
    "predict_features",
    "psnr",
    "psnr_from_nrmse",
    "render_pair",
    "split_model",
    "warp_image",
]
