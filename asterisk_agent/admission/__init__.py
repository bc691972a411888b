"""Admission before answer: how many calls an account and a trunk may hold at once, decided on StasisStart (or
by the FastAGI ``admit`` route) before anything answers; each admitted call holds a slot, a lease released
exactly once."""
