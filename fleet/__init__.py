"""Fleet: what spans sites and the cloud (DESIGN.md, contract 11).

``mining`` decides which results are hard (Sedna's criteria), ``store`` keeps hard samples as a
dataset folder ``edgefpga train`` reads plus an SQLite index, ``registry`` keeps model versions
with their card, build folder and verify.json in MLflow's model registry. Only ``registry``
needs the ``fleet`` extra (MLflow); it is imported when used.
"""
