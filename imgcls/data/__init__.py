"""Data: sources, the decode cache, the tensor-resident loader and file loaders."""

from imgcls.data.bundle import DataBundle, Split
from imgcls.data.image_io import open_image
from imgcls.data.loaders import make_loader
from imgcls.data.prepare import load_data, write_split_lists
from imgcls.data.sources import data_root, list_sources

__all__ = ["DataBundle", "Split", "data_root", "list_sources", "load_data", "make_loader", "open_image", "write_split_lists"]
