"""edgediff: differential testing of edge-inference backends against golden NumPy ops."""
__version__ = "0.1.0"
