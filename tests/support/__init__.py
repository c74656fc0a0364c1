"""What every kind of test shares: the server launcher, tokens, and waiting for a condition.

* :mod:`tests.support.server` — a whole Switchboard (supervisor, router, shards) as a real process tree
  on a free loopback port, with its own runtime directory and log;
* :mod:`tests.support.tokens` — connection tokens signed with the test secret;
* :mod:`tests.support.waiting` — ``eventually`` / ``eventually_async``: wait for a condition with a
  deadline instead of sleeping a fixed time.

Every deadline here is multiplied by the environment variable ``SWITCHBOARD_TEST_TIMEOUT_SCALE``
(default 1): on a slow or loaded machine, ``SWITCHBOARD_TEST_TIMEOUT_SCALE=3 make test`` gives every wait
three times as long without touching a test.
"""
