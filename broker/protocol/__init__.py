"""Sans-I/O client protocol: connection state, connect handling and message encoding."""
