"""The combined U-Net / Kite-Net segmentation network (see ``model.py`` for the picture)."""

from ai_engine.network.config import CombinedNetConfig
from ai_engine.network.model import CombinedNet, NetworkInputError

__all__ = ["CombinedNet", "CombinedNetConfig", "NetworkInputError"]
