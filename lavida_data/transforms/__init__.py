"""Load-time transforms: images (pixels, micro-conditions) and tokenisation."""
