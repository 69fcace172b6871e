"""belabox-metrics: an edge metrics agent for BELABOX live-streaming encoders."""

__version__ = "0.1.0"
