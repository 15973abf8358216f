import sys

from streamlstm.cli import main

sys.exit(main())
