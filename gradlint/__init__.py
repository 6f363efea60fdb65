"""gradlint: find gradient bugs in TensorFlow code before they reach a training run."""

__version__ = "0.1.0"
