"""asterisk-agent: an AI voice agent worker for the Asterisk PBX."""

__version__ = "0.1.0"
