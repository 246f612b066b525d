"""`fraudstream console`: a live web page over the alerts topic, whose verdicts become labels.

One role per module, the pure ones first (no Kafka or web I/O, no web framework; the clock is an argument):

- :mod:`~pipelines.console.auth`: password hashes, sessions, CSRF tokens, roles
- :mod:`~pipelines.console.queue`: the bounded in-memory alert queue, newest first, filtered like `alerts tail`
- :mod:`~pipelines.console.verdicts`: a verdict's ``labels`` record and the append-only audit log
- :mod:`~pipelines.console.explain`: an alert's reasons in words
- :mod:`~pipelines.console.jobstatus`: the running job's status file as the page shows it
- :mod:`~pipelines.console.events`: the fan-out of new alerts and status ticks to the open pages
- :mod:`~pipelines.console.views`: the JSON the API answers with
- :mod:`~pipelines.console.service`: what the console does (ingest, query, verdicts), apart from HTTP

and the edges: :mod:`~pipelines.console.kafka_io` (the alerts reader, the labels writer),
:mod:`~pipelines.console.web` (the FastAPI app), with :mod:`~pipelines.console.access` (sessions, CSRF,
roles, the loopback guard) and :mod:`~pipelines.console.inputs` (bodies and query parameters checked),
and :mod:`~pipelines.console.command` (the CLI).
"""
