"""recipe: Karpathy's recipe for training neural networks, as six gated stages."""

__version__ = "0.1.0"
