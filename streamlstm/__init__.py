"""streamlstm: streaming anomaly detection with one LSTM state per stream."""

__version__ = "0.1.0"
