import sys
from kbn.cli import main

sys.exit(main())
