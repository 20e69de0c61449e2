"""Reference runs: the test guests under the wasmtime CLI with real sockets.

``reference.wasmtime_cli`` runs guests and parses their ``key=value`` output;
``reference.guests`` builds (cached) the guests of ``tests/guests``.
"""
