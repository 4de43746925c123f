"""The model's CPU kernels: search's matrix products through oneDNN on weights reordered
once (onednn_weights.py) and the LSTM recurrences nn.LSTM's CPU kernels run slowly
(lstm.py). The layers in dist_lstm/model/ decide when to use them; elsewhere (GPU) they
run torch's own kernels."""
