"""Put the repository root on ``sys.path`` so the rule scripts can import ``workflow_scripts``.

Snakemake runs each ``script:`` with only the script's own folder on the path; importing this
module first (``import _bootstrap``) adds the folder that holds the package, wherever the
workflow was cloned and whichever working directory (``-d``) the run uses.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
