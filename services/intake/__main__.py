"""`python -m services.intake`: serve the intake API on its port."""

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.serve import main

main(create_app, IntakeSettings())
