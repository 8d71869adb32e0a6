"""Card readers: each runs in its own thread and hands decoded reads to the daemon."""
