"""EdgeOmni: an edge runtime for real-time multimodal captioning.

The data path is visible in the package layout:
``sources`` -> ``chunking`` -> ``engines`` -> ``captions`` -> ``sinks``, wired by ``pipeline``.
Models come only from verified ``bundle`` directories, written by the ``export`` stage.
"""

__version__ = "0.1.0"
