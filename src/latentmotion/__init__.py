"""latentmotion: motion in the latent space of CNNs, for collaborative intelligence.

Reproduces and extends Ulhaq & Bajić, "Analysis of latent-space motion for
collaborative intelligence" (ICASSP 2021): split a CNN into edge and cloud,
move images and, scaled by the layer's stride (Eq. 12), feature tensors;
measure NRMSE (Eq. 13, 14); estimate motion by block matching; code feature
sequences with motion-compensated prediction. Conventions: see
:mod:`latentmotion.motion`.
"""

import importlib

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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
