"""Partial-convolution UNet (Liu et al. 2018) in Keras 3. The torch backend is the default; set
KERAS_BACKEND=tensorflow before running a script to use TensorFlow."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")
