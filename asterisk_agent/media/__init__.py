"""Media: RTP and codecs as pure code, jitter buffer, pacing, the UDP transport."""
