"""`python -m finopti.policy [policy_dir]` runs the Rego unit tests (what `finopti policy test` wraps)."""

import sys

from finopti.policy.testing import main

sys.exit(main())
