"""Channel rules: options per namespace, name checks and client permissions (sans-I/O)."""

from broker.channel_options import ChannelOptions, compile_channel_regex, option_names
from broker.channels.rules import ChannelRules, PublishDecision, SubscribeDecision

__all__ = [
    "ChannelOptions",
    "ChannelRules",
    "PublishDecision",
    "SubscribeDecision",
    "compile_channel_regex",
    "option_names",
]
