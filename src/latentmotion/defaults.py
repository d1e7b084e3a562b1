"""The default network and cut of every command, evaluation and service, in one place.

Plain constants with no imports, so the command line reads them without loading torch.
EfficientNet-Lite0 is a trained CNN that installs offline (PyPI), so the defaults run anywhere.
"""

__all__ = ["DEFAULT_LAYER", "DEFAULT_MODEL"]

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_LAYER = "_blocks.4.add"
