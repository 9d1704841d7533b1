import sys

from nnunet_transfer.cli import main

sys.exit(main())
