"""Speech: voice activity, recognition and synthesis behind small interfaces, offline by default."""
