import sys

from radvis.cli import main

sys.exit(main())
