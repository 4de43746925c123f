"""dist-lstm: encoder-decoder LSTM translation that scales from one CPU to many GPUs."""

__version__ = "0.1.0"
