"""Models: a registry plus one file per family. Importing this package registers them all."""

from imgcls.models import (  # noqa: F401  (registers the models)
    classic,
    detection,
    fastnet,
    hub,
    mlp,
    mobilenet,
    photonet,
    resnet_cifar,
    segmentation,
    simple_cnn,
)
from imgcls.models.load import load_model
from imgcls.models.registry import create_model, list_models, model_accepts, register_model

__all__ = ["create_model", "list_models", "load_model", "model_accepts", "register_model"]
