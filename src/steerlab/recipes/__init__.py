"""Published methods as recipe builders: each returns a ``Steering``."""

from .ablation import directional_ablation

__all__ = ["directional_ablation"]
