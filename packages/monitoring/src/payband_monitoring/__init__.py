"""Post-deployment monitoring: NannyML drift and performance, fairness, Prometheus metrics."""

import os
from importlib.metadata import version

# NannyML sends usage telemetry to an outside service unless this is set before it is imported.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

__version__ = version("payband-monitoring")
