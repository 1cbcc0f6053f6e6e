"""Federated learning across sites with Flower (issue 16): only model weights travel.

``partition`` splits ELPV's training part into three site folders (the format ``edgefpga train``
reads), ``task`` holds what the Flower apps share (weights as ArrayRecords, a site's local epochs
through ``models.train.train``, evaluation), ``client_app``/``server_app`` are the Flower
ClientApp and ServerApp (app config: ``app/pyproject.toml``), ``deploy`` starts a SuperLink and
SuperNodes over TLS (``certs``), ``export`` turns the final global model into a model folder with
its card. Needs the ``fed`` extra (flwr); docs/federated.md is the user's guide.
"""
