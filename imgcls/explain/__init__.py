"""Tools to find out why a model is wrong: the learning-rate range test and the single-batch sanity check."""

from imgcls.explain.lr_find import LRFindResult, lr_find
from imgcls.explain.sanity import SanityResult, sanity_check

__all__ = ["LRFindResult", "SanityResult", "lr_find", "sanity_check"]
