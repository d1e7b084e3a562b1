"""latentmotion: motion in the latent space of CNNs, for collaborative intelligence.

Reproduces and extends Ulhaq & Bajić, "Analysis of latent-space motion for
collaborative intelligence" (ICASSP 2021): split a CNN into edge and cloud,
move images and, scaled by the layer's stride (Eq. 12), feature tensors;
measure NRMSE (Eq. 13, 14); estimate motion by block matching; code feature
sequences with motion-compensated prediction. Conventions: see
:mod:`latentmotion.motion`.
"""

from ._lazy import lazy_exports

#: Where each public name lives. Loaded on first use (PEP 562), so that
#: ``import latentmotion`` (and the command line's start-up, which installs
#: its signal handlers) does not wait for torch.
_EXPORTS = {
    "block_match": "estimation",
    **dict.fromkeys(("InputError", "LatentMotionError", "UnknownNameError", "WeightsUnavailableError"), "errors"),
    **dict.fromkeys(("hevc_band", "kl_divergence", "nrmse", "nrmse_from_psnr", "psnr", "psnr_from_nrmse"), "metrics"),
    **dict.fromkeys(("ImageNetModel", "LayerInfo", "Split", "list_layers", "list_models", "load_model", "split_model"), "models"),
    **dict.fromkeys(("Affine", "FramePair", "Warped", "flow_from_affine", "interior_mask", "predict_features", "render_pair", "warp_image"), "motion"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
