"""godprof: what a model architecture costs before and after you build it.

The analytic layer (``godprof.spec``, ``godprof.analytic``) never imports torch; only
``godprof.build`` and ``godprof.measure`` do.
"""

__version__ = "0.1.0"
