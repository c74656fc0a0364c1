"""Proxies to the application backend: HTTP calls Centrifugo makes to let a backend decide.

* :mod:`broker.proxy.connect` — the connect proxy's request and result, without I/O;
* :mod:`broker.proxy.http` — the HTTP client (a keep-alive pool per proxy, one deadline per call) and
  which headers a call carries.
"""
