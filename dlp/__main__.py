import sys

from dlp.cli import main

sys.exit(main())
