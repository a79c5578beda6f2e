"""`python -m plmscale.cli ...`: how torchrun workers start `plmscale train` (plmscale.train.launch)."""

import sys

from plmscale.cli import main

sys.exit(main())
