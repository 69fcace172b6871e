"""Forwarding stored samples: formats, transport, retry policy, the upload loop."""
