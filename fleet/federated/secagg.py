"""Secure aggregation with Flower's own SecAgg+ (``SecAggPlusWorkflow`` at the server,
``secaggplus_mod`` at each site): the server learns the weighted sum of the sites' updates, never
one site's update. The app is ``fleet/federated/app_secagg`` (``edgefpga fed start --secagg``).

Why a second ServerApp and ClientApp: in Flower 1.42, SecAgg+ exists only for the legacy API.
``SecAggPlusWorkflow`` requires a ``LegacyContext`` holding a ``flwr.server.strategy`` strategy
(``configure_fit``/``aggregate_fit`` on ``FitIns``/``FitRes``), and ``secaggplus_mod`` turns the
ClientApp's reply into a ``FitRes``; the Message-API strategies the main app uses
(``flwr.serverapp.strategy``) have no secure-aggregation path. So this app uses Flower's legacy
``FedAvg`` in Flower's ``DefaultWorkflow`` with the SecAgg+ fit workflow, and a ``NumPyClient``
whose local epochs are the same ``local_train`` as the main app's.

What it gives up, by design of secure aggregation: the per-site checks of the main app (a site's
update that does not fit or is not finite cannot be refused: the server never sees it; a non-finite
aggregate is still refused and the previous model kept) and the per-site validation scores (no
evaluation round, the last round's model is the run's). SecAgg+ also clips every weight to
``+-secagg-clip`` and quantizes it before masking: weights beyond the range (BatchNorm's running
variances can be) are clipped, which the run's history records.
"""

from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from .client_app import site_of
from .server_app import write_atomic
from .task import FederationError, RunSettings, central_test, server_run, evaluate, initial_model, load_arrays, local_train, \
    site_data, wire_keys


class SiteClient(NumPyClient):
    """A site in the legacy API: weights as a list in ``wire_keys`` order."""

    def __init__(self, context: Context):
        self.context = context

    def fit(self, parameters, config):
        settings = RunSettings.from_run_config(dict(self.context.run_config))
        _, folder = site_of(self.context)
        data = site_data(folder, settings)
        keys = wire_keys(initial_model(settings))
        model = load_arrays(dict(zip(keys, parameters)), settings, "the global model received from the SuperLink")
        result = local_train(model, data, settings, int(config["server-round"]), 0.0, float(config["lr"]))
        state = result.model.state_dict()
        return ([state[k].detach().cpu().numpy() for k in keys], len(data.split.fit),
                {"train-loss": float(result.history[-1]["loss"]), "train-seconds": float(result.seconds)})


client = ClientApp(client_fn=lambda context: SiteClient(context).to_client(), mods=[secaggplus_mod])
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Rounds of Flower's legacy FedAvg with SecAgg+ fit rounds; after each, the global model on
    ELPV's test cells (history.json, global.npz as the main app writes them)."""
    settings, out = server_run(context.run_config)
    template = initial_model(settings)
    keys = wire_keys(template)
    state = template.state_dict()
    pixels, labels = central_test(settings)
    rounds: list[dict] = []
    last = [time.perf_counter()]

    def evaluate_fn(server_round: int, ndarrays, config):
        arrays = dict(zip(keys, ndarrays))
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise FederationError(f"round {server_round}: the securely aggregated model is not finite")
        scores = evaluate(load_arrays(arrays, settings), pixels, labels, settings)
        now = time.perf_counter()
        at_clip = {k: int((np.abs(a) >= 0.999 * settings.secagg_clip).sum()) for k, a in arrays.items()}
        rounds.append({"round": server_round, "seconds": round(now - last[0], 2), "test": scores, "sites": {},
                       "trained": settings.min_train_nodes if server_round else 0, "failed": [], "refused": [],
                       "weights_at_the_clip": {k: n for k, n in at_clip.items() if n}})
        last[0] = now
        write_atomic(out / "global.npz", arrays=arrays)
        write_atomic(out / "history.json", json.dumps({
            "settings": settings.__dict__, "strategy": f"FedAvg + SecAgg+ ({settings.secagg_shares} shares, "
            f"threshold {settings.secagg_threshold}, clip {settings.secagg_clip})", "selected_round": None,
            "selection": "the last round (no site evaluation under secure aggregation)", "rounds": rounds},
            indent=1) + "\n")
        print(f"round {server_round}: ELPV test accuracy {scores['accuracy']:.4f}", flush=True)
        return 0.0, {k: v for k, v in scores.items()}

    strategy = LegacyFedAvg(
        fraction_fit=settings.fraction_train, fraction_evaluate=0.0, min_fit_clients=settings.min_train_nodes,
        min_evaluate_clients=0, min_available_clients=settings.min_available_nodes,
        initial_parameters=ndarrays_to_parameters([state[k].detach().cpu().numpy() for k in keys]),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda r: {"server-round": r, "lr": settings.round_lr(r)})
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.rounds,
                                                                round_timeout=settings.round_timeout),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=settings.secagg_shares, reconstruction_threshold=settings.secagg_threshold,
        clipping_range=settings.secagg_clip, timeout=settings.round_timeout))
    workflow(grid, legacy)
