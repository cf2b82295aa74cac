"""``efvid``'s shared parts: the wire protocol, the policy, the client.

The broker itself is :mod:`efvi.apps.efvid`; adapters use :mod:`efvi.broker.client`
when the process lacks the privileges their setup needs (docs/security.md)."""
