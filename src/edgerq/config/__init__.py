"""Configuration: the model and the lxml loader with its XSDs."""

from edgerq.config.loader import load_any, load_consumer, load_provider
from edgerq.config.model import (
    ConsumerConfig,
    ConsumerService,
    ListenerConfig,
    PipeConfig,
    ProviderConfig,
    ProviderService,
    Secret,
)

__all__ = [
    "ConsumerConfig",
    "ConsumerService",
    "ListenerConfig",
    "PipeConfig",
    "ProviderConfig",
    "ProviderService",
    "Secret",
    "load_any",
    "load_consumer",
    "load_provider",
]
