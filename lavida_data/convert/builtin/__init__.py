"""The built-in converters: the 15 upstream ``preprocess_fn`` names, with cleaner aliases."""

from lavida_data.convert.builtin import edit, t2i, understanding  # noqa: F401  (importing registers them)
from lavida_data.convert.builtin.common import truncate_caption

__all__ = ["edit", "t2i", "understanding", "truncate_caption"]
