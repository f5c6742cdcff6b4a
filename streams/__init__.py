"""crm360 beyond its pure parts (``schemas``, ``processors``, ``sinks``), one room per concern.

- ``streams.worker``: what runs in production, the worker (faust app, pipeline, state, models, web).
- ``streams.analytics``: the analysts' panels, live dashboard, report and Grafana dashboard.
- ``streams.sdk``: for the systems around crm360, the event publisher, the alert subscriber and
  the query client.
- ``streams.local``: the one-machine stack for development, demos and tests (broker, storage,
  launcher, supervisor, simulator, replay, demo).
- ``streams.measure``: the benches and the evaluation on real data.

``streams.settings`` is the configuration every room shares, ``streams.cli`` the ``crm360``
command. Imports run one way: ``cli`` and ``measure`` over ``local``, ``local`` over ``sdk``
and ``worker``, ``worker`` over ``analytics``; no runtime module imports ``local`` or ``measure``.
"""
