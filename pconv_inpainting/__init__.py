"""Partial-convolution UNet (Liu et al. 2018) in Keras 3. The torch backend is the default; set
KERAS_BACKEND=tensorflow before running a script to use TensorFlow.

Keras reads KERAS_BACKEND once, when it is first imported, so every module of this package takes Keras
from here (`from pconv_inpainting import keras`): no import sorter can move `import keras` above the line
that sets the backend.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # TensorFlow's C++ start-up chatter on stderr: errors only
if "keras" in sys.modules and sys.modules["keras"].backend.backend() != os.environ["KERAS_BACKEND"]:
    raise ImportError(f"keras was imported with the {sys.modules['keras'].backend.backend()} backend before "
                      f"pconv_inpainting could set KERAS_BACKEND={os.environ['KERAS_BACKEND']}; import "
                      "pconv_inpainting first or set KERAS_BACKEND in the environment")


def _import_quietly(name: str) -> None:
    """Import `name` (if installed) with file descriptor 2 sent to /dev/null: TensorFlow's C++ start-up
    lines (absl, oneDNN, cudart) ignore TF_CPP_MIN_LOG_LEVEL, and Keras imports TensorFlow whenever it is
    installed, whatever the backend (to seed it, for its data adapters), so an error would come after them."""
    import importlib
    import importlib.util
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        module = importlib.import_module(name)
        if os.environ["KERAS_BACKEND"] == "tensorflow":
            module.config.list_physical_devices("GPU")     # its cuInit line, on a machine without a GPU
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


_import_quietly("tensorflow")
import keras  # noqa: E402  (after the backend is set, on purpose)

__all__ = ["keras"]
