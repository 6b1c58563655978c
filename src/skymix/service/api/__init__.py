"""The HTTP API of ``skymix serve``: one module per resource (settings, recordings, health),
put together by ``app.create_app``."""
