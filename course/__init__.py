"""Plumbing shared by the notebooks of the deep-learning tuning course.

Each module holds one idea; import what you need from it::

    from course.device import get_device, seed_everything
    from course.training import fit
    from course.metrics import confusion_matrix

The package imports nothing heavy by itself, so ``course --help`` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
