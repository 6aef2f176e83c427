"""`python -m lab_code.measuring COMMAND ...`: lab_code.commands runs the side's modules."""

import sys
from pathlib import Path

from lab_code.commands import main

sys.exit(main("lab_code.measuring", Path(__file__).parent))
