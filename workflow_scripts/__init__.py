"""cellembed: learned single-cell features from multichannel fluorescence microscopy.

The package holds plain functions (arrays in, arrays out) used by the Snakemake rules;
``workflow_scripts/scripts/`` holds the thin entry points the rules call.
"""

__version__ = "0.1.0"
