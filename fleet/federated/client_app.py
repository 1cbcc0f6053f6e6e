"""The Flower ClientApp: what runs at a site, inside its SuperNode.

The site's data folder comes from the SuperNode's node config (``data-dir``), never from the
server; a reply carries the updated weights and a few counts and scores (train), or scores only
(evaluate): no image, no file name, no per-image result leaves the site.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .task import FederationError, RunSettings, evaluate, load_arrays, local_train, resized, site_data, to_arrays

app = ClientApp()


def site_of(context: Context) -> tuple[str, str]:
    """(site name, data folder) from the SuperNode's ``--node-config``."""
    folder = context.node_config.get("data-dir")
    if not folder:
        raise FederationError("this SuperNode has no data-dir in its --node-config (start it with edgefpga fed "
                              "supernode --data <site folder>)")
    return str(context.node_config.get("site", folder)), str(folder)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local epochs from the global weights; reply with the new weights and the fit-image count
    (FedAvg's weight)."""
    settings = RunSettings.from_run_config(dict(context.run_config))
    name, folder = site_of(context)
    data = site_data(folder, settings)
    model = load_arrays(msg.content["arrays"], settings, "the global model received from the SuperLink")
    config = msg.content["config"]
    result = local_train(model, data, settings, int(config["server-round"]), float(config.get("proximal-mu", 0.0)),
                         float(config.get("lr", settings.lr)))
    metrics = MetricRecord({"num-examples": len(data.split.fit), "train-loss": float(result.history[-1]["loss"]),
                            "train-seconds": float(result.seconds)})
    return Message(RecordDict({"arrays": to_arrays(result.model), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_site(msg: Message, context: Context) -> Message:
    """The global model on this site's own validation part (scores only, and the site's name so
    the server can report each site)."""
    settings = RunSettings.from_run_config(dict(context.run_config))
    name, folder = site_of(context)
    data = site_data(folder, settings)
    model = load_arrays(msg.content["arrays"], settings, "the global model received from the SuperLink")
    scores = evaluate(model, resized(data, data.split.val, settings), data.labels[data.split.val], settings)
    metrics = MetricRecord({"num-examples": scores.pop("n"), **{k.replace("_", "-"): v for k, v in scores.items()}})
    return Message(RecordDict({"metrics": metrics, "site": ConfigRecord({"name": name})}), reply_to=msg)
