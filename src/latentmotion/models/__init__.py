"""Models: the registry of trained or seeded CNNs and their edge/cloud split."""

from .fingerprint import weights_fingerprint
from .split import LayerInfo, Split, edge_multi, list_layers, split_model
from .zoo import ImageNetModel, checkpoint_dir, list_models, load_model, weights_file, weights_inputs

__all__ = ["ImageNetModel", "LayerInfo", "Split", "checkpoint_dir", "edge_multi", "list_layers", "list_models", "load_model", "split_model", "weights_file", "weights_fingerprint", "weights_inputs"]
