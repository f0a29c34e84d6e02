"""spikefa: continuous-time learning in networks of stochastic binary integrating neurons.

Reference model: Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback
weights support error backpropagation for deep learning", Nature Communications 7:13276,
Methods, "A deep network that integrates its activity and spikes" (their Fig. 4).
"""

__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402

__all__ = ["Config", "ConfigError", "Run", "load", "load_config", "__version__"]

_SUBMODULES = ("alignment", "bench", "cli", "data", "experiments", "export", "feedback", "kernels", "measures",
               "network", "plots", "rate", "record", "reference", "runfile", "sweep", "train", "validate")


def __getattr__(name):
    # `import spikefa; spikefa.plots.raster(...)` works without importing every submodule
    # (matplotlib, Brian2, Dask) at `import spikefa`; Run and load come from runfile (h5py,
    # Numba) on first use, so that the `spikefa` command starts, and hears Ctrl-C, at once
    if name in ("Run", "load"):
        from . import runfile

        return getattr(runfile, name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'spikefa' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
