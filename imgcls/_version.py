"""The package version, in a module of its own: model files record it without importing the package's facade."""

__version__ = "0.1.0"
