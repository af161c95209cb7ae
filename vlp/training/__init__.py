"""Pieces of the pretraining loop that recipes share: run config, datasets, batch collation."""
