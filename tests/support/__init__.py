"""What the tests share: starting servers (``server``), tokens (``tokens``) and waiting (``waiting``).

Tests wait for a condition with :func:`tests.support.waiting.eventually` rather than for a fixed time.
``SWITCHBOARD_TEST_TIMEOUT_SCALE`` (a positive number, default 1.0) multiplies every deadline these
helpers apply, for a slow or busy machine: ``SWITCHBOARD_TEST_TIMEOUT_SCALE=3 make test``.
"""
