"""Torch modules of the layer kinds, one module per kind (named by each kind's ``build``)."""
