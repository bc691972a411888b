"""Handing a caller to a person: warm transfer through ARI bridges, callback when nobody is free, and the
agent's screen-pop."""
