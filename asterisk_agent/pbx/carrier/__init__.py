"""The carrier: simulated callers and human agents."""
