"""lmkit: the real implementations behind the lmkit book.

Each idea lives in a module of its own; import what you need, e.g.::

    from lmkit.transformer.masks import causal_mask
    from lmkit.utils import pick_device, seed_everything, show_source
"""

__version__ = "0.1.0"
