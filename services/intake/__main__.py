"""`python -m services.intake`: serve the intake API on its port."""

import sys

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.keys import MissingKeyError
from shared.serve import serve

settings = IntakeSettings()
try:
    app = create_app(settings)
except MissingKeyError as exc:
    print(f"intake cannot start: {exc}", file=sys.stderr)
    sys.exit(2)
serve(app, settings)
