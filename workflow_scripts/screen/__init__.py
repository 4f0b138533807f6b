"""Screening profiles: per-well profiles, plate normalisation and batch correction, screening metrics.

:mod:`~workflow_scripts.screen.profiling` turns a single-cell feature table into well-level
profiles through the field's recipe (aggregate to wells, normalise each plate against its
negative controls, select features, optionally sphere and Harmony-correct);
:mod:`~workflow_scripts.screen.metrics` scores each step with phenotypic activity,
consistency, plate-label mAP and BBBC021's NSC/NSCB accuracy.
"""
