"""``python -m ingest.channels.api > openapi.json``: the checked-in OpenAPI document.

Written from an application over an empty configuration and an in-memory
store, so the document depends on the code alone; ``tests/test_api.py``
fails when the checked-in copy is not what the code serves.
"""

from __future__ import annotations

import json
import sys

from ingest.channels.api.routes import create_app
from policy.config.loading import parse_config
from storage.engine import make_engine

document = create_app(lambda: parse_config(""), make_engine("sqlite://")).openapi()
sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
