"""deepdock: a self-hosted, container-native deep learning platform."""

__version__ = "0.1.0"
