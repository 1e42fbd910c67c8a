"""The suite's plugin: the shared fixtures live in :mod:`tests.support`.

Listed here once, so no test module imports a fixture just to make pytest see
it: the stores and configurations (:mod:`tests.support.stores`), the loopback
DNS server, the relays, the OAuth provider and the webhook receiver.
"""

import pytest

# The helpers assert too; rewritten like test modules, whichever imports them first.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.stores",
    "tests.support.dnsserver",
    "tests.support.relay",
    "tests.support.oauth_server",
    "tests.support.helpdesk",
]
