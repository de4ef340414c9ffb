"""Packaged Hydra configs (a package so that Hydra finds them when imgcls is installed)."""
