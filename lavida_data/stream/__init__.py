"""Streaming prepared datasets: the epoch's mixture, the global order, the loader."""
