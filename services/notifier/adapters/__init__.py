"""Adapters of the notifier to the outside world: delivery channels and integrator webhooks."""

from services.notifier.adapters.channels import (
    Channel,
    DeliveryError,
    EmailChannel,
    LogChannel,
    LoggingSmsProvider,
    Message,
    SmsChannel,
    SmsProvider,
)
from services.notifier.adapters.webhooks import (
    Aborted,
    UnsafeWebhookUrl,
    WebhookSender,
    check_webhook_url,
    signature,
)

__all__ = [
    "Aborted",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "LogChannel",
    "LoggingSmsProvider",
    "Message",
    "SmsChannel",
    "SmsProvider",
    "UnsafeWebhookUrl",
    "WebhookSender",
    "check_webhook_url",
    "signature",
]
