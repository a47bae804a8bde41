"""Conversion: a table row -> a LLaVA-style sample.

``registry`` holds the converters (``@converter`` in code, the ``lavida_data.converters`` entry
points of installed distributions, this one's built-ins included); ``sample`` is the convert
step (a row, its dataset plan and its place in training -> a checked sample); ``builtin`` holds
the 15 upstream ``preprocess_fn`` converters.
"""
