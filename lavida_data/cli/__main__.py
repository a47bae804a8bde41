"""``python -m lavida_data.cli``: the ``lavida-data`` command."""

import sys

from lavida_data.cli import main

sys.exit(main())
