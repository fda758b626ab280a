"""segcli: command-line video segmentation with a pure-PyTorch OMG-Seg."""

__version__ = "0.1.0"
