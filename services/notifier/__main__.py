"""`python -m services.notifier`: serve the notifier API on its port."""

from services.notifier.app import create_app
from services.notifier.settings import NotifierSettings
from shared.serve import main

main(create_app, NotifierSettings())
