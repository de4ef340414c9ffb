"""Tools to find out why a model is wrong and what it sees: the learning-rate range test, the single-batch sanity
check, Grad-CAM, DeepDream."""

from imgcls.explain.dream import deep_dream, dream
from imgcls.explain.gradcam import explain, find_target_layer
from imgcls.explain.lr_find import LRFindResult, lr_find
from imgcls.explain.sanity import SanityResult, sanity_check

__all__ = ["LRFindResult", "SanityResult", "deep_dream", "dream", "explain", "find_target_layer", "lr_find", "sanity_check"]
