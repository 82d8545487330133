"""The layers around certification (the package graph of ``tests/import_graph.py``): the
verifiers sit below the training loop, checkpoint certification above it, the attacks below the
losses. ``tests/test_import_graph.py`` checks that no cycle is left anywhere."""

from __future__ import annotations

from import_graph import graph


def test_the_layers_of_certification() -> None:
    edges = graph()
    below_the_loop = {"trainables.evaluation", "trainables.training", "trainables.config"}
    assert not below_the_loop & edges["trainables.certify"]
    assert "trainables.data" not in edges["trainables.certify"]
    assert "trainables.training" not in edges["trainables.evaluation"]
    assert "trainables.losses" not in edges["trainables.attacks"]  # its objectives are its own
    above = {"trainables.certify", "trainables.evaluation", "trainables.training"}
    assert above <= edges["trainables.checkpoint_certification"]
