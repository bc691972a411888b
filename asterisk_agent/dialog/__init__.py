"""Dialog: flows (YAML), slots, intents, confidence and escalation signals, run per call as pure code."""
