"""facesurv: survival prediction from portrait photos (StyleGAN2 embeddings) and clinical data.

This package holds only the CLI, configuration and shared types; the work lives in
embedding/, features/, training/, serving/ and flows/.
"""

__version__ = "0.1.0"
