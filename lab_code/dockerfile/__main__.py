"""`python -m lab_code.dockerfile FILE`: explain a Dockerfile (see lab_code.dockerfile.cli)."""

import sys

from lab_code.dockerfile.cli import main

sys.exit(main())
