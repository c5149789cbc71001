import sys

from byol_lite.cli import main

sys.exit(main())
