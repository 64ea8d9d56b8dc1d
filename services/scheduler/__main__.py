"""`python -m services.scheduler`: serve the scheduler API on its port."""

from services.scheduler.app import create_app
from services.scheduler.settings import SchedulerSettings
from shared.serve import main

main(create_app, SchedulerSettings())
