"""napari-lsr: label super-resolution of cancer in whole-slide images, as a napari plugin."""

__version__ = "0.1.0"
