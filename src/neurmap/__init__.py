"""NeurMAP: neural maximum a posteriori estimation on unpaired data for motion deblurring."""

__version__ = "0.1.0"
