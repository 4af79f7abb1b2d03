"""bagoftricks: image classification with every trick of He et al. (CVPR 2019)."""
__version__ = "0.1.0"
