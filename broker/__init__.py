"""Switchboard core: configuration, protocol, auth, CEL, IPC, supervisor and CLI."""

__version__ = "0.1.0"
