"""Training: one loop for every model family and the batch streams it reads.

Modules, each importing only those above it (and :mod:`workflow_scripts.data`, the home of
the cell arrays and their normalisations, which imports nothing from here):

* :mod:`~workflow_scripts.training.device`: the training device and how batches reach it
  (items held there, or prepared by a prefetching thread).
* :mod:`~workflow_scripts.training.streams`: :class:`~workflow_scripts.training.streams.TrainingSource`,
  the one declared interface of a batch stream, and the plain stream over a cell or tile table.
* :mod:`~workflow_scripts.training.pairs`: pairs of cells of a group (paired cell inpainting,
  contrastive views of two cells).
* :mod:`~workflow_scripts.training.guided`: expert feedback carried by the batches (guided
  latent spaces) and its loss terms.
* :mod:`~workflow_scripts.training.loop`: :func:`~workflow_scripts.training.loop.fit`, the loop,
  with its precision, schedule, augmentation and checkpoint helpers.
* :mod:`~workflow_scripts.training.job`: one configured model trained end to end (split,
  streams, fingerprint, outputs), what rule ``train_model`` runs.

The package itself imports nothing, so that feature extraction can read batch streams without
loading the training loop.
"""
