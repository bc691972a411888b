"""The private Asterisk: root build, instances, test-bed fixtures, simulated callers."""
