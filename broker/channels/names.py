"""Pure string rules on channel names: namespace split, user-limited lists, shape checks.

Boundaries are parameters because every one of them is configurable (``channel_private_prefix``,
``channel_namespace_boundary``, ``channel_user_boundary``, ``channel_user_separator``).
"""

from __future__ import annotations


def split_namespace(channel: str, private_prefix: str, boundary: str) -> tuple[str, str]:
    """(namespace, rest). The private prefix is dropped once before looking for the boundary, so
    ``$chat:x`` is in namespace ``chat``. Without a boundary the namespace is "" and rest is the channel
    as given, which is what a top-level ``channel_regex`` is matched against."""
    trimmed = (
        channel[len(private_prefix) :] if private_prefix and channel.startswith(private_prefix) else channel
    )
    if boundary:
        namespace, found, rest = trimmed.partition(boundary)
        if found:
            return namespace, rest
    return "", channel


def allowed_users(channel: str, user_boundary: str, separator: str) -> list[str] | None:
    """The users listed after the LAST user boundary, or None when the channel is not user-limited.

    The last boundary, because the part before it (``dialog#`` in ``dialog#42,43``, or a namespace) may
    itself contain the character.
    """
    if not user_boundary or user_boundary not in channel:
        return None
    tail = channel.rsplit(user_boundary, 1)[1]
    return tail.split(separator) if separator else [tail]


def byte_length(channel: str) -> int:
    """Length as Centrifugo measures it (UTF-8 bytes), cheap for the usual ASCII name."""
    if channel.isascii():
        return len(channel)
    return len(channel.encode("utf-8", "surrogatepass"))


def is_printable_ascii(text: str) -> bool:
    """Space to tilde only. Stricter than "any ASCII": control characters in a channel name would end up
    in logs, and NUL terminates channel topics on the publication data plane."""
    return text.isascii() and text.isprintable()
