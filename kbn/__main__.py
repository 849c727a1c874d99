"""`python -m kbn`: the command line (kbn.cli); nothing of its own."""

import sys
from kbn.cli import main

sys.exit(main())
