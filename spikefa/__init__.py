"""spikefa: continuous-time learning in networks of stochastic binary integrating neurons.

Reference model: Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback
weights support error backpropagation for deep learning", Nature Communications 7:13276,
Methods, "A deep network that integrates its activity and spikes" (their Fig. 4).
"""

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402
from .runfile import Run, load  # noqa: E402

__all__ = ["Config", "ConfigError", "Run", "load", "load_config", "__version__"]
