"""globe: GLOBE (arXiv 2506.14674) reimplemented — image geo-localization by reasoning VLMs.

Importing the package is cheap: torch, transformers, trl and geopandas are imported inside the functions that
need them.
"""

__version__ = "0.1.0"
