"""Translation with trained models: loading a checkpoint and the Translator
(inference.py), greedy and beam search (search.py), word alignments (alignment.py),
attention heatmaps (attention_plot.py), a grid over search options (tuning.py), the
HTTP server (serve/)."""
