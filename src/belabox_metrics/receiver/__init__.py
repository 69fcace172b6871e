"""metrics-receiver: the server side that accepts, validates, deduplicates and stores uploads.

``receiver.app`` (needs aiohttp, the ``receiver`` extra): ``build_app``, ``serve``, ``run``.
``receiver.storage`` (stdlib only): ``read_samples(db_path)`` for tests and tools.
``receiver.validate`` (stdlib only): the pure payload validator.
Nothing is imported here so that reading a receiver database never requires aiohttp.
"""
