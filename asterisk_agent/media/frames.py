"""Frame sizes, defined once: 8 kHz narrowband, 20 ms frames."""

from __future__ import annotations

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160 samples per frame
FRAME_SECONDS = FRAME_MS / 1000

WIDEBAND_RATE = 16000
WIDEBAND_FRAME_SAMPLES = WIDEBAND_RATE * FRAME_MS // 1000  # 320 samples per frame

# RTP payload types Asterisk 22 sends and accepts on externalMedia (dynamic types it drops on receive).
PT_PCMU = 0
PT_PCMA = 8
PT_L16_8K = 11
PT_SLIN16 = 118  # what Asterisk sends for slin16 (big-endian, 640 bytes per 20 ms); never send it back
