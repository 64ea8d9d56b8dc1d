"""`python -m services.notifier`: serve the notifier API on its port."""

import sys

from services.notifier.app import create_app
from services.notifier.settings import NotifierSettings
from shared.keys import MissingKeyError
from shared.serve import serve

settings = NotifierSettings()
try:
    app = create_app(settings)
except MissingKeyError as exc:
    print(f"notifier cannot start: {exc}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
